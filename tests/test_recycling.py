"""max_requests recycling leaves no gap (flaskapp/runtime/recycle.py): a recycled worker's replacement
accepts while the old one's streams finish, and the master's worker count comes back to what it was."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from flaskapp.runtime import recycle
from servers import Emulator, request, stream, upstream_env

EMULATOR = {"ttft": 0.05, "tokens_per_second": 50.0, "tokens": 10_000}  # conftest's `emulator`
LIMIT = 20  # streams enough to recycle a worker; more than the new requests sent after


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_worker_recycled_under_streams_keeps_answering_new_requests(emulator: Emulator, start_server):
    emulator.reset()
    server = start_server(upstream_env(emulator, max_retries=0), "--max-requests", str(LIMIT),
                          "--graceful-timeout", "20")
    [old_worker] = server.worker_pids()
    with ThreadPoolExecutor(LIMIT) as pool:
        # The limit's worth of streams of 5 s: the old worker drains them long after its limit.
        streams = [pool.submit(stream, f"{server.url}/stream?prompt=old{i}&max_tokens=250", timeout=30)
                   for i in range(LIMIT)]
        assert emulator.wait_for(lambda s: s["in_flight"] >= LIMIT, timeout=10)["in_flight"] >= LIMIT
        assert _wait_for(lambda: "Autorestarting worker" in server.log(), timeout=5)

        # New requests for 3 s, while the old worker stops accepting (gunicorn closes a stopping
        # worker's listener within a second) and drains: each is answered, and soon.
        answers, until = [], time.monotonic() + 3.0
        while time.monotonic() < until:
            started = time.monotonic()
            status, _, _ = request("GET", f"{server.url}/?prompt=new&max_tokens=3", timeout=10)
            answers.append((status, round(time.monotonic() - started, 3)))
            time.sleep(0.2)
        assert all(status == 200 and waited < 2.0 for status, waited in answers), answers
        assert emulator.stats()["in_flight"] >= LIMIT  # the old worker still drains all its streams
        results = [s.result() for s in streams]

    assert all(r.status == 200 and r.complete for r in results)
    assert emulator.stats()["streams_aborted"] == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    answered_by = {line["pid"] for line in lines if line.get("event") == "request" and line["route"] == "/"}
    assert answered_by - {old_worker}  # the replacement answered some
    # The old worker gone, the master is back to one worker: the extra one was given back.
    assert _wait_for(lambda: server.worker_pids() != [old_worker] and len(server.worker_pids()) == 1, 10)
    time.sleep(1.0)  # a master that still counted two would have forked another by now
    assert len(server.worker_pids()) == 1
    assert len(re.findall(r"Booting worker with pid", server.log())) == 2


def test_an_operators_ttin_stays_after_a_recycle(emulator: Emulator, start_server):
    emulator.reset()
    server = start_server(upstream_env(emulator, max_retries=0), "--max-requests", "3")
    [old_worker] = server.worker_pids()
    server.process.send_signal(signal.SIGTTIN)  # the operator's: one worker more
    assert _wait_for(lambda: len(server.worker_pids()) == 2, 10)
    for i in range(8):  # enough for the first worker to reach its limit
        assert request("GET", f"{server.url}/?prompt=n{i}&max_tokens=1")[0] == 200

    def settled() -> bool:  # every recycled worker gone, and no hand-over under way
        log = server.log()
        recycled = {int(pid) for pid in re.findall(r'"pid":(\d+),"message":"Autorestarting worker', log)}
        return (old_worker in recycled and not recycled & set(server.worker_pids())
                and log.count("Autorestarting worker") == log.count("stops accepting"))

    assert _wait_for(settled, 10)
    time.sleep(1.5)  # a master that counted one worker too many or too few would fork or stop one by now
    assert len(server.worker_pids()) == 2


# -- the master's bookkeeping, on a stand-in for gunicorn's Arbiter ------------------------------
class Arbiter:
    """What the hooks use of gunicorn's Arbiter: num_workers calls nworkers_changed as its setter does."""

    WORKERS: dict

    def __init__(self, workers: int) -> None:
        self.cfg = SimpleNamespace(uid=os.geteuid(), gid=os.getegid())
        self.WORKERS, self._num_workers = {}, None
        self.num_workers = workers

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        old, self._num_workers = self._num_workers, value
        recycle.nworkers_changed(self, value, old)

    def spawn(self, pid: int) -> None:
        self.WORKERS[pid] = SimpleNamespace(pid=pid)

    def ttin(self) -> None:
        self.num_workers += 1

    def exit(self, pid: int) -> None:
        recycle.worker_exited(self, self.WORKERS.pop(pid))


@pytest.fixture
def arbiter(monkeypatch):
    monkeypatch.setenv(recycle.ENV, "")  # restored after the test: the hooks set it
    master = Arbiter(2)
    master.spawn(101), master.spawn(102)
    yield master
    recycle.remove_directory(master)


def _want(pid: int) -> None:
    open(os.path.join(os.environ[recycle.ENV], f"want-{pid}"), "w").close()


def test_a_replacement_is_given_back_when_its_worker_exits(arbiter):
    _want(101)
    arbiter.ttin()
    assert arbiter.num_workers == 3
    arbiter.spawn(103)
    arbiter.exit(101)
    assert arbiter.num_workers == 2
    assert not os.listdir(os.environ[recycle.ENV])  # its files went with it


def test_an_operators_ttin_and_ttou_are_not_undone(arbiter):
    arbiter.ttin()  # the operator's, no want pending
    _want(101)
    arbiter.ttin()  # the worker's
    arbiter.exit(101)
    assert arbiter.num_workers == 3
    arbiter.exit(102)  # an ordinary exit (a crash): nothing given back
    assert arbiter.num_workers == 3
    _want(103)
    arbiter.spawn(103)
    arbiter.ttin()
    arbiter.num_workers -= 1  # the operator's TTOU while 103 drains
    arbiter.exit(103)
    assert arbiter.num_workers == 2


def test_a_want_whose_signal_came_after_its_worker_exited_is_cancelled_by_it(arbiter):
    _want(101)
    arbiter.exit(101)  # reaped before its TTIN was handled (the master was busy reloading)
    assert arbiter.num_workers == 2
    arbiter.ttin()  # now its TTIN
    assert arbiter.num_workers == 2
    arbiter.ttin()  # the operator's
    assert arbiter.num_workers == 3


def test_a_reload_forgets_what_was_granted(arbiter):
    _want(101)
    arbiter.ttin()
    arbiter.num_workers = 2  # Arbiter.setup() on SIGHUP: the count from the settings
    recycle.reloaded(arbiter)
    arbiter.exit(101)
    assert arbiter.num_workers == 2
