"""The official MCP Python SDK's Streamable HTTP client against
`workbench mcp --http`: lists the tools and calls every one of them.

usage: sdk_client.py URL TOKEN PROJECT RELAY_URL IDENTITY_A IDENTITY_B
(prints one JSON line per tool call; exits non-zero on any failure). Run by
tests/mcp_http.rs, which starts the relay and makes the two identity files:
the chat tools are called as two keyed agents, A and B, so every proposal
transition has a real counterparty.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url, token, project, relay, id_a, id_b):
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as streams:
        read, write = streams[0], streams[1]
        # Declares MCP Apps, as a GUI host does: the app-only tool and the
        # ui:// resources are listed only for such clients.
        ui = {"io.modelcontextprotocol/ui": {"mimeTypes": ["text/html;profile=mcp-app"]}}
        async with ClientSession(read, write, extensions=ui) as s:
            # Dumped by alias: the wire names, whatever the SDK's attribute names.
            init = (await s.initialize()).model_dump(by_alias=True, mode="json")
            print(json.dumps({"initialize": init["serverInfo"]["name"],
                              "version": init["protocolVersion"],
                              "extensions": init["capabilities"].get("extensions")}), flush=True)
            tools = await s.list_tools()
            names = sorted(t.name for t in tools.tools)
            print(json.dumps({"tools": names}), flush=True)
            progress = []

            async def on_progress(p, total, message):
                progress.append(p)

            calls = [
                ("workbench_scaffold", {"name": project, "title": "SDK"}),
                ("workbench_state", {"project": project, "template": "<p id=x>hi</p>"}),
                ("workbench_log", {"project": project, "message": "from the SDK"}),
                ("workbench_read_log", {"project": project, "limit": 5}),
                ("workbench_list", {}),
                ("workbench_events", {"project": project}),
                ("workbench_snapshot", {"project": project}),
                ("workbench_wait", {"project": project, "timeout_seconds": 7}),
                ("workbench_app_post", {"project": project, "path": "/api/event",
                                        "body": json.dumps({"name": "sdk", "data": 1})}),
                ("workbench_events", {"project": project}),
                ("workbench_write_file", {"project": project, "path": "notes.txt",
                                          "text": "written over HTTP"}),
                ("workbench_read_file", {"project": project, "path": "files/notes.txt"}),
                ("workbench_stop", {"project": project}),
            ]

            async def run(name, args):
                kw = {"progress_callback": on_progress} if name.endswith("_wait") else {}
                r = (await s.call_tool(name, args, **kw)).model_dump(by_alias=True, mode="json")
                print(json.dumps({"tool": name, "isError": r["isError"],
                                  "structured": r.get("structuredContent"),
                                  "progress": progress if name == "workbench_wait" else None}),
                      flush=True)
                return r.get("structuredContent") or {}

            for name, args in calls:
                await run(name, args)

            # The chat tools, as two keyed agents on a real relay.
            a = await run("chat_connect", {"server": relay, "name": "sdk-a", "identity": id_a,
                                           "channels": ["#general"]})
            b = await run("chat_connect", {"server": relay, "name": "sdk-b", "identity": id_b,
                                           "channels": ["#general"]})
            await run("chat_create", {"session": "sdk-a", "channel": "#sdk", "invite_only": True})
            await run("chat_invite", {"session": "sdk-a", "channel": "#sdk", "agent": b["agent_id"]})
            await run("chat_join", {"session": "sdk-b", "channel": "#sdk"})
            await run("chat_send", {"session": "sdk-a", "to": "#sdk", "content": "hello over HTTP"})
            await run("chat_wait", {"session": "sdk-b", "since": 0, "timeout_seconds": 5})
            await run("chat_read", {"session": "sdk-b", "since": 0})
            await run("chat_channels", {"session": "sdk-a"})
            await run("chat_agents", {"session": "sdk-a", "channel": "#sdk"})
            p1 = await run("chat_propose", {"session": "sdk-a", "to": b["agent_id"], "task": "measure"})
            await run("chat_accept", {"session": "sdk-b", "proposal_id": p1["proposal_id"]})
            await run("chat_complete", {"session": "sdk-b", "proposal_id": p1["proposal_id"],
                                        "proof": "done"})
            p2 = await run("chat_propose", {"session": "sdk-a", "to": b["agent_id"], "task": "solder"})
            await run("chat_reject", {"session": "sdk-b", "proposal_id": p2["proposal_id"],
                                      "reason": "busy"})
            p3 = await run("chat_propose", {"session": "sdk-a", "to": b["agent_id"], "task": "probe"})
            await run("chat_accept", {"session": "sdk-b", "proposal_id": p3["proposal_id"]})
            await run("chat_dispute", {"session": "sdk-a", "proposal_id": p3["proposal_id"],
                                       "reason": "no result"})
            await run("chat_leave", {"session": "sdk-b", "channel": "#sdk"})
            await run("chat_disconnect", {"session": "sdk-b"})
            await run("chat_disconnect", {"session": "sdk-a"})
            res = (await s.list_resources()).model_dump(by_alias=True, mode="json")
            print(json.dumps({"resources": [r["uri"] for r in res["resources"]],
                              "mime": [r["mimeType"] for r in res["resources"]]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
