"""The experiment's servers: the emulator and gunicorn as child processes on free loopback ports.

Each listening socket is bound here and inherited by the child as a file descriptor
(`--fd N`, `-b fd://N`), so no other process can take the port between choosing and
binding it. Children may be pinned to CPUs, so that the server measured has a core of
its own while the emulator and this load generator share the other.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .stats import cpu_seconds, schedstat_seconds

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_listener() -> socket.socket:
    """A listening loopback socket on a free port, to hand to a child process."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
    sock.set_inheritable(True)
    return sock


def _pinned(cpus: set[int] | None):
    if not cpus:
        return None
    # Runs in the child between fork and exec; the experiment process has no other threads then.
    return lambda: os.sched_setaffinity(0, cpus)


def pin_self(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str = "/healthz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Quick shutdown (SIGQUIT for gunicorn, SIGTERM otherwise), then SIGKILL to the whole group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT if self.name == "gunicorn" else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # workers left behind by a stuck master
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait()

    def worker_pids(self) -> list[int]:
        """The master's child processes (gunicorn workers), found by their parent pid."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == self.process.pid:
                    pids.append(int(entry))
        return sorted(pids)

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds of each worker process now, to the nanosecond (see `process_cpu`)."""
        usage = {}
        for pid in self.worker_pids():
            try:
                usage[pid] = process_cpu(pid)
            except OSError:
                pass
        return usage

    def own_cpu(self) -> float:
        return process_cpu(self.process.pid)


def process_cpu(pid: int) -> float:
    """CPU seconds a process has run: its threads' run time, which the kernel keeps in nanoseconds.

    /proc/<pid>/stat's user and system times come in clock ticks (10 ms), too coarse for a
    cell of a few requests (one tick more or less was 100 % of a cell's CPU per request).
    schedstat holds each thread's time on a CPU; threads that already exited are lost, which
    the server set-ups do not have (gthread keeps its pool). Without schedstat (a kernel
    built without it), ticks.
    """
    total, found = 0.0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            total += schedstat_seconds(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text())
            found = True
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between the listing and the read
    if found:
        return total
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), CLOCK_TICKS)


def _spawn(name: str, command: list[str], sock: socket.socket, log_dir: Path, env: dict[str, str] | None,
           cpus: set[int] | None) -> Server:
    port = sock.getsockname()[1]
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   pass_fds=[sock.fileno()], start_new_session=True,
                                   preexec_fn=_pinned(cpus))
    sock.close()
    server = Server(name, process, port, log_path)
    server.wait_ready()
    return server


def start_emulator(log_dir: Path, ttft: float, tokens_per_second: float, tokens: int,
                   cpus: set[int] | None = None, obfuscation: bool = False) -> Server:
    sock = free_listener()
    command = [sys.executable, "-m", "flaskapp.emulator", "--fd", str(sock.fileno()), "--ttft", str(ttft),
               "--tokens-per-second", str(tokens_per_second), "--tokens", str(tokens),
               *(["--obfuscation"] if obfuscation else [])]
    return _spawn("emulator", command, sock, log_dir, None, cpus)


def start_gunicorn(log_dir: Path, upstream: str, gunicorn_args: list[str], cpus: set[int] | None = None,
                   extra_env: dict[str, str] | None = None) -> Server:
    """`gunicorn -c gunicorn.conf.py wsgi:app` with the given arguments, pointed at `upstream` (…/v1).

    The caller's FLASKAPP_* settings are not passed on (a gateway key or rate limit left in
    a shell would turn the experiment into 401s and 429s); `extra_env` sets any on purpose.
    """
    sock = free_listener()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLASKAPP_", "GUNICORN_", "WEB_CONCURRENCY"))}
    env.update({"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-loadtest-experiment"})
    env.update(extra_env or {})
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"fd://{sock.fileno()}",
               *gunicorn_args, "wsgi:app"]
    return _spawn("gunicorn", command, sock, log_dir, env, cpus)
