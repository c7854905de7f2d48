"""The official MCP Python SDK's Streamable HTTP client against
`workbench mcp --http`: lists the tools and calls every one of them.

usage: sdk_client.py URL TOKEN PROJECT  (prints one JSON line per tool call;
exits non-zero on any failure). Run by tests/mcp_http.rs.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url, token, project):
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
                ("workbench_stop", {"project": project}),
            ]
            for name, args in calls:
                kw = {"progress_callback": on_progress} if name == "workbench_wait" else {}
                r = (await s.call_tool(name, args, **kw)).model_dump(by_alias=True, mode="json")
                print(json.dumps({"tool": name, "isError": r["isError"],
                                  "structured": r.get("structuredContent"),
                                  "progress": progress if name == "workbench_wait" else None}),
                      flush=True)
            res = (await s.list_resources()).model_dump(by_alias=True, mode="json")
            print(json.dumps({"resources": [r["uri"] for r in res["resources"]],
                              "mime": [r["mimeType"] for r in res["resources"]]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
