"""Fairness: do new requests still start while other streams relay as fast as they can?

    python benchmarks/fairness.py [--fast 50] [--probes 20]

gevent switches greenlets only when one would block, so a stream whose upstream always
has data ready could keep the worker to itself. This starts `--fast` streams from an
emulator that writes as fast as it can (CPU 1), then, while they run, `--probes` short
requests (max_tokens=1), and prints the probes' time to first byte: through one gevent
worker (CPU 0) with the fairness slice on (FLASKAPP_FAIR_SLICE=0.001) and off (0), and
straight to the emulator under the same load as the limit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flaskapp.loadtest.rig import start_emulator, start_gunicorn  # noqa: E402


def probe_ttft(url: str, kind: str, fast: int, probes: int, out: Path) -> list[float]:
    load = [sys.executable, "-m", "flaskapp.loadtest", "run", url, "-k", kind, "--quiet"]
    flood = subprocess.Popen(["taskset", "-c", "1", *load, "-c", str(fast), "-n", str(fast)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # the fast streams are running
    subprocess.run(["taskset", "-c", "1", *load, "-c", str(probes), "-n", str(probes), "--max-tokens", "1",
                    "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    flood.wait()
    records = json.loads(out.read_text())
    records = records.get("records", records) if isinstance(records, dict) else records
    return sorted(r["ttft"] for r in records if r.get("ttft") is not None)


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<32} no probe finished"
    p50, worst = values[len(values) // 2], values[-1]
    return f"{name:<32} probes' first byte: p50 {p50 * 1000:6.0f} ms, max {worst * 1000:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", type=int, default=50, help="Streams relaying flat out (default: %(default)s).")
    parser.add_argument("--probes", type=int, default=20, help="Short requests timed meanwhile (default: %(default)s).")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="fairness-"))
    emulator = start_emulator(logs, 0.0, 1_000_000.0, 20_000, cpus={1})
    try:
        print(summary("direct to the emulator", probe_ttft(emulator.url, "openai-stream", args.fast, args.probes,
                                                           logs / "direct.json")))
        for label, fair_slice in (("gevent worker, fairness on", "0.001"), ("gevent worker, fairness off", "0")):
            server = start_gunicorn(logs, f"{emulator.url}/v1", ["-k", "gevent", "-w", "1"], cpus={0},
                                    extra_env={"FLASKAPP_FAIR_SLICE": fair_slice})
            try:
                print(summary(label, probe_ttft(server.url, "stream", args.fast, args.probes,
                                                logs / f"slice-{fair_slice}.json")))
            finally:
                server.stop()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
