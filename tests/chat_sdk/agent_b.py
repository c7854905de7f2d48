"""Agent B of tests/chat_mcp.rs, driven by the official MCP Python SDK.

Starts its own `workbench mcp` over stdio (the SDK's stdio_client), exactly as
an AI CLI would, and plays B's half of a conversation on a real relay:

1. chat_connect with an identity, in #lab; prints {"event": "ready", ...};
2. waits for A's "hello from A" in #lab and answers "hello from B";
3. waits for A's DM and answers with a DM;
4. waits for A's PROPOSAL and accepts it;
5. waits for A's COMPLETE; prints {"event": "done", ...} and exits 0.

Every step is bounded (chat_wait timeouts, and a whole-run deadline); any
failure exits non-zero with the reason on stderr. Usage:
    python3 agent_b.py <workbench binary> <relay url> <identity file> <home>
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

DEADLINE_S = 90


def say(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def call(session, tool, args):
    res = await session.call_tool(tool, args, read_timeout_seconds=60)
    if res.is_error:
        text = res.content[0].text if res.content else "?"
        raise RuntimeError(f"{tool} failed: {text}")
    return res.structured_content


async def wait_for(session, name, cursor, pred, what):
    """chat_wait until an entry matches; returns (entry, cursor after it)."""
    progress = []

    async def on_progress(p, total, message):
        progress.append(p)

    for _ in range(40):
        r = await session.call_tool(
            "chat_wait",
            {"session": name, "since": cursor, "timeout_seconds": 5},
            read_timeout_seconds=60,
            progress_callback=on_progress,
        )
        if r.is_error:
            raise RuntimeError(f"chat_wait failed: {r.content[0].text}")
        out = r.structured_content
        if out["status"] not in ("messages", "pending"):
            raise RuntimeError(f"unexpected status {out['status']}")
        for m in out["messages"]:
            cursor = m["seq"]
            if pred(m):
                return m, cursor
        cursor = out["cursor"]
    raise RuntimeError(f"never saw {what}")


async def run(binary, url, identity, home):
    params = StdioServerParameters(
        command=binary,
        args=["mcp"],
        env={"WORKBENCH_HOME": home, "HOME": home, "PATH": "/usr/bin:/bin"},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            if "chat_connect" not in (init.instructions or ""):
                raise RuntimeError("the instructions do not mention the chat tools")
            names = {t.name for t in (await s.list_tools()).tools}
            for t in ("chat_connect", "chat_send", "chat_wait", "chat_accept"):
                if t not in names:
                    raise RuntimeError(f"tools/list lacks {t}")
            c = await call(
                s, "chat_connect", {"server": url, "name": "bob", "identity": identity, "channels": ["#lab"]}
            )
            me = c["agent_id"]
            if not c["keyed"] or "#lab" not in c["channels"]:
                raise RuntimeError(f"unexpected chat_connect result {c}")
            cursor = c["last_seq"]
            say("ready", agent_id=me)

            hello, cursor = await wait_for(
                s, "bob", cursor,
                lambda m: m["type"] == "MSG" and m.get("to") == "#lab" and m.get("content") == "hello from A",
                "A's hello",
            )
            alice = hello["from"]
            await call(s, "chat_send", {"session": "bob", "to": "#lab", "content": "hello from B"})

            dm, cursor = await wait_for(
                s, "bob", cursor,
                lambda m: m["type"] == "MSG" and m.get("to") == me and m.get("from") == alice,
                "A's DM",
            )
            await call(s, "chat_send", {"session": "bob", "to": alice, "content": "dm to A: got " + dm["content"]})

            prop, cursor = await wait_for(
                s, "bob", cursor,
                lambda m: m["type"] == "PROPOSAL" and m.get("from") == alice,
                "A's proposal",
            )
            acc = await call(s, "chat_accept", {"session": "bob", "proposal_id": prop["id"], "payment_code": "pc-bob"})
            if acc["status"] != "accepted":
                raise RuntimeError(f"accept answered {acc}")

            done, cursor = await wait_for(
                s, "bob", cursor,
                lambda m: m["type"] == "COMPLETE" and m.get("proposal_id") == prop["id"],
                "A's COMPLETE",
            )
            say("done", proposal_id=prop["id"], accepted=acc["status"], completed=done["status"],
                task=prop["task"], alice=alice, dm=dm["content"])


def main():
    binary, url, identity, home = sys.argv[1:5]
    try:
        asyncio.run(asyncio.wait_for(run(binary, url, identity, home), DEADLINE_S))
    except Exception as e:  # the reason goes to the Rust test via stderr
        print(f"agent_b failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
