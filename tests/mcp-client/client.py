"""A third-party MCP client for tests/mcp.rs: the official Python SDK (`pip install mcp==2.3.0`).

Usage:
    MCP_TOKEN=... python3 client.py http http://127.0.0.1:8080/mcp  < calls.json
    python3 client.py stdio /path/to/teamctl mcp                    < calls.json

calls.json is a JSON list of [tool, arguments] pairs. The client runs initialize, tools/list and
one tools/call per pair, and prints a JSON report: the server's name, the tools (name,
description, input schema) and each call's result (is_error, text, structured content).
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def exercise(session, calls):
    init = await session.initialize()
    listed = await session.list_tools()
    results = []
    for tool, args in calls:
        r = await session.call_tool(tool, args)
        text = "".join(getattr(c, "text", "") for c in r.content)
        results.append({"tool": tool, "is_error": bool(r.is_error), "text": text, "structured": r.structured_content})
    return {
        "server": init.server_info.name,
        "tools": [{"name": t.name, "description": t.description, "schema": t.input_schema} for t in listed.tools],
        "results": results,
    }


async def main():
    mode, target = sys.argv[1], sys.argv[2]
    calls = json.load(sys.stdin)
    if mode == "http":
        headers = {"Authorization": f"Bearer {os.environ['MCP_TOKEN']}"}
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(target, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    report = await exercise(session, calls)
    elif mode == "stdio":
        params = StdioServerParameters(command=target, args=sys.argv[3:], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                report = await exercise(session, calls)
    else:
        raise SystemExit(f"unknown mode {mode!r}: use http or stdio")
    print(json.dumps(report))


asyncio.run(main())
