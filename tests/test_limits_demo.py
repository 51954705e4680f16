"""The demo's run under a rate limit, without keys: its 2N model calls cost the caller, not 127.0.0.1.

`POST /demo/run?count=N` sends 2N requests to the server's own loopback address. They
count against the caller who asked for the run (through a header signed with the
master's secret, trusted only from loopback), so a run is no way around the limit.
The caller here connects from 127.0.0.2, so its address is not the run's.
"""
from __future__ import annotations

import http.client
import json

from servers import Process, upstream_env

CALLER = "127.0.0.2"  # another loopback address: not the address the run's requests come from
LIMIT = 5


def call(server: Process, method: str, path: str, body: dict | None = None, headers: dict | None = None,
         source: str = CALLER) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15, source_address=(source, 0))
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, payload, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_demo_run_costs_the_caller_its_2n_calls(emulator, start_server):
    server = start_server(upstream_env(emulator, max_retries=0, rate_limit=f"{LIMIT}/minute"))
    status, body = call(server, "POST", "/demo/run?count=2", {"prompt": "Hi", "max_tokens": 3})
    assert status == 200 and b"event: end" in body
    assert body.count(b'"status":200') == 4  # the run's own four requests were answered
    # 1 (the run) + 4 (its requests) = the caller's whole budget.
    status, body = call(server, "GET", "/?prompt=hi&max_tokens=2")
    assert status == 429 and json.loads(body)["error"]["type"] == "rate_limit_error"
    # Another caller's budget is untouched: the run's requests did not count against 127.0.0.1.
    assert call(server, "GET", "/?prompt=hi&max_tokens=2", source="127.0.0.1")[0] == 200


def test_a_forged_on_behalf_header_is_not_trusted(emulator, start_server):
    server = start_server(upstream_env(emulator, max_retries=0, rate_limit="2/minute"))
    forged = {"X-Flaskapp-On-Behalf-Of": "addr:10.9.8.7 " + "0" * 64}
    statuses = [call(server, "GET", "/?prompt=hi&max_tokens=2", headers=forged)[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # counted against its own address, not the one it named
    assert call(server, "GET", "/?prompt=hi&max_tokens=2", headers=forged, source="127.0.0.3")[0] == 200
