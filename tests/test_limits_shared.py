"""Rate limits shared between instances: two gunicorn servers counting in one real redis-server.

As a user outgrowing one machine runs it: `FLASKAPP_RATE_LIMIT_STORAGE_URI` names a Redis
that every instance (and every worker) counts in, so a caller's budget is one budget however
its requests are spread. Needs Debian's redis-server (`.ci/run` installs it) and the redis
package (the `redis` extra).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from servers import request, start_gunicorn, upstream_env

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not os.path.exists(REDIS_SERVER) and not os.environ.get("CI"),
                                reason="needs Debian's redis-server (apt-get install redis-server)")

KEY = "gateway-key-shared-0123"


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory) -> str:
    """A private redis-server on a Unix socket (no TCP port to race for), nothing persisted."""
    directory = tmp_path_factory.mktemp("redis")
    path = directory / "redis.sock"
    process = subprocess.Popen([REDIS_SERVER, "--port", "0", "--unixsocket", str(path), "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.02)
    yield str(path)
    process.terminate()
    process.wait(10)


def _instance(tmp_path: Path, emulator, storage: str):
    return start_gunicorn(tmp_path, upstream_env(emulator, api_keys=KEY, rate_limit="5/minute",
                                                 rate_limit_storage_uri=storage))


def _models(server) -> int:
    return request("GET", f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})[0]


def test_two_instances_share_one_budget_through_redis(tmp_path, emulator, redis_socket):
    storage = f"redis+unix://{redis_socket}"
    first, second = _instance(tmp_path, emulator, storage), _instance(tmp_path, emulator, storage)
    try:
        statuses = [_models(first), _models(second), _models(first), _models(second), _models(first)]
        assert statuses == [200] * 5
        # The sixth request is over the caller's budget, whichever instance it reaches.
        assert _models(second) == 429 and _models(first) == 429
        assert "rate_limit_error" in request("GET", f"{second.url}/v1/models",
                                             headers={"Authorization": f"Bearer {KEY}"})[2].decode()
        for server in (first, second):
            assert "Traceback" not in server.log() and redis_socket not in server.log()
    finally:
        first.stop()
        second.stop()


def test_in_memory_each_instance_counts_alone(tmp_path, emulator):
    # The contrast: memory:// keeps a count per worker process, so two instances allow twice.
    first, second = _instance(tmp_path, emulator, "memory://"), _instance(tmp_path, emulator, "memory://")
    try:
        assert [_models(first) for _ in range(5)] == [200] * 5
        assert [_models(second) for _ in range(5)] == [200] * 5
        assert _models(first) == 429
    finally:
        first.stop()
        second.stop()
