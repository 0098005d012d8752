from __future__ import annotations
import asyncio, re
from pathlib import Path
import httpx
from tests.conftest import fresh_pg_schema, running_server
from tests.integration.web.conftest import Dashboard, csrf_of, sign_in
from tests.integration.web.test_http import enqueue, later, CSRF

async def probe(client, paths):
    for p in paths:
        try:
            r = await client.get(p)
            print(p[:80], r.status_code, r.text[:150].replace("\n"," ") if r.status_code >= 400 else "")
        except Exception as e:
            print(p[:80], "EXC", repr(e))

async def test_probe_pg() -> None:
    async with fresh_pg_schema() as url:
        async with running_server(url, http_listen="127.0.0.1:0") as srv:
            dash = Dashboard(srv.app, f"http://127.0.0.1:{srv.app.http_port}", srv.jobs)
            job = await enqueue(dash, schedule=later(), payload={"n": 1}, labels={"a": "b"})
            async with httpx.AsyncClient(base_url=dash.url, timeout=10) as c:
                await probe(c, [
                    "/jobs/%00", "/jobs/" + "a"*5000, "/jobs/%ff", "/jobs/%00/cancel",
                    "/jobs?task=a%00b", "/jobs?payload=k%3D%00", "/jobs?label=k%3D%00",
                    "/jobs?payload=k%3D%22%5Cu0000%22", "/jobs?label=%00%3Dv", "/jobs?payload=%00%3D1",
                    "/jobs?queue=a%00", "/jobs?id=abc%00",
                    "/jobs?payload=n%3D1e999", "/jobs?payload=n%3D99999999999999999999999999",
                    "/jobs?payload=n%3DNaN", "/jobs?payload=n%3D-Infinity",
                    "/jobs?created_from=0001-01-01T00:00", "/jobs?created_from=9999-12-31T23:59:59%2B14:00",
                    "/jobs?created_from=1970-01-01T00:00-14:00",
                    "/jobs/bulk/cancel?payload=k%3D%00", "/jobs/bulk/cancel?label=k%3D%00",
                    "/jobs/bulk/cancel?payload=n%3D1e999",
                    "/jobs/live?since=0&payload=k%3D%00",
                    "/queues?after=%00", "/recurring?after=%00", "/overview?window=%00",
                    f"/jobs/{job.id}/cancel?next=%00",
                ])
