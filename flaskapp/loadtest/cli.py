"""Command line: `python -m flaskapp.loadtest run URL ...` and `... experiment --out DIR`.

The same two mains are wrapped as click commands (`loadtest`, `experiment`) for
`app.cli.add_command(...)`, so `flask --app wsgi loadtest URL` works too; the click
commands pass their arguments through to argparse, which owns the options and the help.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path


from .client import KINDS, STREAMING_KINDS, Target
from .schedule import ARRIVALS, Slo



def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency values must be positive integers")
    return values


def _add_request_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what each request asks")
    group.add_argument("--prompt", default="Write a short story about a lighthouse keeper.",
                       help="The prompt sent with every request.")
    group.add_argument("--max-tokens", type=int, default=None,
                       help="Ask for at most this many tokens (default: leave it to the server).")
    group.add_argument("--model", default="gpt-4",
                       help="The model to ask for; it must be on the server's allow-list (default: %(default)s).")
    group.add_argument("--api-key", default=os.environ.get("FLASKAPP_LOADTEST_API_KEY"),
                       help="Send this gateway key as a bearer token (default: $FLASKAPP_LOADTEST_API_KEY, "
                       "or none).")
    group.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                       help="Event loop of the load generator; auto uses uvloop when installed.")
    group.add_argument("--quiet", action="store_true", help="Show no progress on stderr.")


def _add_slo_options(group) -> None:
    group.add_argument("--slo-ttft-p99", type=float, default=None, metavar="SECONDS",
                       help="Objective: p99 time to first token at most this many seconds.")
    group.add_argument("--slo-itl-p99", type=float, default=None, metavar="SECONDS",
                       help="Objective: p99 inter-token latency at most this many seconds.")
    group.add_argument("--sweep-duration", type=float, default=10.0, metavar="SECONDS",
                       help="Seconds each step of the capacity search sends for (default: %(default)s).")
    group.add_argument("--sweep-start", type=float, default=1.0, metavar="RATE",
                       help="First rate tried, in requests per second; it doubles until the objective is "
                       "missed, then the search bisects (default: %(default)s).")
    group.add_argument("--sweep-steps", type=int, default=8,
                       help="Most steps of the capacity search (default: %(default)s).")


def slo_from(args: argparse.Namespace) -> Slo | None:
    """The objective the options ask for, or None when they ask for no capacity search."""
    if args.slo_ttft_p99 is None and args.slo_itl_p99 is None:
        return None
    return Slo(ttft_p99_s=args.slo_ttft_p99, itl_p99_s=args.slo_itl_p99)


def build_run_parser(prog: str = "python -m flaskapp.loadtest run") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Send requests to the blocking and streaming views (or straight to an "
        "OpenAI-compatible server) at a fixed concurrency or at a fixed rate, and report time to first token, "
        "inter-token latency, time per output token, end-to-end latency, output tokens and throughput.")
    parser.add_argument("url", help="Base URL of the server, such as http://127.0.0.1:8000 or https://host.")
    load = parser.add_argument_group("how much load")
    load.add_argument("-k", "--kind", action="append", choices=KINDS,
                      help="Kind of request; repeat for several (default: block and stream). "
                      "openai-block and openai-stream POST {url}/v1/chat/completions.")
    load.add_argument("-c", "--concurrency", type=int, default=10,
                      help="Requests in flight at once, per kind (default: %(default)s): a closed loop, where "
                      "each request waits for one to finish.")
    load.add_argument("--rate", type=float, default=None,
                      help="Instead of a concurrency, start this many requests per second whatever is in "
                      "flight (an open loop, as users arrive); needs --duration.")
    load.add_argument("--arrival", choices=ARRIVALS, default="constant",
                      help="With --rate: evenly spaced starts, or Poisson arrivals (default: %(default)s).")
    load.add_argument("-n", "--requests", type=int, default=None,
                      help="Requests to send per kind (default: as many as the concurrency, unless --duration is set).")
    load.add_argument("-d", "--duration", type=float, default=None,
                      help="Keep sending for this many seconds per kind.")
    load.add_argument("--together", action="store_true",
                      help="Run the kinds at the same time, as the seed did, instead of one after another.")
    load.add_argument("--timeout", type=float, default=60.0,
                      help="Give up on a single request after this many seconds (default: %(default)s).")
    load.add_argument("--time-limit", type=float, default=None,
                      help="End each run after this many seconds, cancelling what is in flight.")
    tls = parser.add_argument_group("https targets")
    tls.add_argument("--cafile", default=None,
                     help="Trust the certificate (or CA bundle) in this PEM file instead of the system's.")
    tls.add_argument("--insecure", action="store_true",
                     help="Do not check the server's certificate (a self-signed test server).")
    capacity = parser.add_argument_group(
        "capacity search", "With an objective, the run searches the highest --rate that meets it, for each kind.")
    _add_slo_options(capacity)
    _add_request_options(parser)
    output = parser.add_argument_group("what it writes")
    output.add_argument("--json", type=Path, default=None,
                        help="Write the raw per-request records here, with llmperf's and guidellm's names for "
                        "each figure beside ours (ttft_s and time_to_first_token_ms, ...).")
    output.add_argument("--plot", type=Path, default=None,
                        help="Write a request timeline PNG here, and latency distributions beside it.")
    return parser


def build_experiment_parser(prog: str = "python -m flaskapp.loadtest experiment") -> argparse.ArgumentParser:
    from .experiment import DEFAULT_SETUPS
    parser = argparse.ArgumentParser(
        prog=prog, description="Start the emulator and gunicorn for each server set-up, run bursts of "
        "blocking and streaming requests at each concurrency, and write DIR/report.md, plots and raw records.")
    parser.add_argument("--out", type=Path, required=True, help="Directory for the report, plots and raw data.")
    cells = parser.add_argument_group("the cells")
    cells.add_argument("--setup", action="append", default=None, metavar="NAME=ARGS",
                       help="A server set-up: 'direct' or a name and gunicorn arguments, such as "
                       "'gevent=-k gevent -w 1'. Repeat for several (default: "
                       + "; ".join(DEFAULT_SETUPS) + ").")
    cells.add_argument("--kinds", default="block,stream",
                       help="Comma-separated kinds to run in each set-up (default: %(default)s).")
    cells.add_argument("--concurrency", type=_csv_ints, default=(1, 10, 100, 500),
                       help="Comma-separated concurrency levels (default: 1,10,100,500).")
    cells.add_argument("--rounds", type=int, default=1,
                       help="Requests per cell are rounds x concurrency (default: %(default)s).")
    cells.add_argument("--min-requests", type=int, default=3,
                       help="But never fewer than this many requests per cell (default: %(default)s).")
    cells.add_argument("--cell-time-limit", type=float, default=15.0,
                       help="Seconds after which a cell is ended and reported as timed out (default: %(default)s). "
                       "A cell sends fewer requests when its waves could not finish within the limit at the "
                       "emulator's pace, and the report says so.")
    cells.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                       help="A setting for gunicorn and the app, such as FLASKAPP_MAX_INFLIGHT=5000; repeat "
                       "for several. The shell's own FLASKAPP_* variables are not passed on.")
    cells.add_argument("--no-pin", dest="pin", action="store_false",
                       help="Do not pin gunicorn to one CPU and the emulator and load generator to the others.")
    timing = parser.add_argument_group("the emulator's pace")
    timing.add_argument("--ttft", type=float, default=0.5, help="Seconds before the first token (default: %(default)s).")
    timing.add_argument("--tokens-per-second", type=float, default=50.0, help="Pace of the answer (default: %(default)s).")
    timing.add_argument("--tokens", type=int, default=100, help="Answer length in tokens (default: %(default)s).")
    capacity = parser.add_argument_group(
        "capacity", "With an objective, each set-up's streaming kinds are also swept at open-loop rates, "
        "and the report gives the highest rate that meets it.")
    _add_slo_options(capacity)
    _add_request_options(parser)
    return parser


async def _run_all(args: argparse.Namespace, target: Target, kinds: list[str]):
    import asyncio
    from .runner import Progress, run_kind, run_rate
    requests = args.requests if args.requests or args.duration else args.concurrency

    def one(kind: str):
        if args.rate:
            return run_rate(target, kind, args.rate, args.duration, args.arrival, timeout=args.timeout,
                            time_limit=args.time_limit,
                            progress=Progress(f"{kind} rate={args.rate:g}/s", enabled=not args.quiet))
        return run_kind(target, kind, args.concurrency, requests=requests, duration=args.duration,
                        timeout=args.timeout, time_limit=args.time_limit,
                        progress=Progress(f"{kind} c={args.concurrency}", enabled=not args.quiet))
    if args.together:
        return await asyncio.gather(*(one(kind) for kind in kinds))
    return [await one(kind) for kind in kinds]


def json_records(records) -> str:
    """Per-request records as JSON: ours, with llmperf's and guidellm's names for each figure beside them."""
    from .stats import field_record
    return json.dumps([{**asdict(r), **field_record(r)} for r in records])


def _capacity_main(args: argparse.Namespace, target: Target, kinds: list[str], slo: Slo) -> int:
    from . import report
    from .capacity import find_capacity
    found = []
    for kind in kinds:
        capacity = find_capacity(target, kind, slo, start_rate=args.sweep_start, duration=args.sweep_duration,
                                 arrival=args.arrival, max_steps=args.sweep_steps, timeout=args.timeout,
                                 loop=args.loop, progress=not args.quiet).as_dict()
        found.append(capacity)
        print(f"== {kind}: objective {capacity['slo']}")
        print(report.step_table(capacity))
        rate = capacity["rate_per_s"]
        print(f"capacity: {'below the lowest rate tried' if rate is None else f'{rate:g} requests/s'}\n")
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
        print(f"capacity search: {args.json}")
    return 0 if all(c["rate_per_s"] is not None for c in found) else 1


def run_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from . import report
    from .runner import run
    from .stats import summarize
    parser = build_run_parser(*( [prog] if prog else []))
    args = parser.parse_args(argv)
    kinds = args.kind or ["block", "stream"]
    if args.rate is not None and (args.rate <= 0 or not args.duration):
        parser.error("--rate takes a positive number of requests per second, and --duration how long to send")
    slo = slo_from(args)
    if slo and not set(kinds) <= STREAMING_KINDS:
        parser.error("a capacity search (--slo-ttft-p99, --slo-itl-p99) takes streaming kinds: "
                     + ", ".join(sorted(STREAMING_KINDS)))
    target = Target(args.url.rstrip("/"), prompt=args.prompt, max_tokens=args.max_tokens, model=args.model,
                    api_key=args.api_key, cafile=args.cafile, verify=not args.insecure)
    try:
        target.request_bytes(kinds[0])
    except ValueError as exc:
        parser.error(str(exc))
    if slo:
        return _capacity_main(args, target, kinds, slo)
    results = run(lambda: _run_all(args, target, kinds), loop=args.loop)
    for result in results:
        summary = summarize(result.records, result.wall_time, planned=result.planned)
        print(report.kind_table(result.kind, summary, None if args.together else result.client_cpu,
                                timed_out=result.timed_out))
        if result.rate:
            print(f"open loop: {result.rate:g} requests/s ({args.arrival}), at most {result.concurrency} in flight")
        if result.timed_out:
            print("(ended by --time-limit; requests in flight were cancelled)")
        print()
    records = [r for result in results for r in result.records]
    if args.json:
        args.json.write_text(json_records(records))
        print(f"raw records: {args.json}")
    if args.plot:
        from . import plots
        groups = {result.kind: result.records for result in results}
        load = f"{args.rate:g} requests/s" if args.rate else f"{args.concurrency} concurrent"
        plots.plot_timeline(groups, args.plot, f"{args.url}, {load} per kind")
        other = args.plot.with_name(args.plot.stem + "-distributions.png")
        plots.plot_distributions(groups, other)
        print(f"plots: {args.plot}, {other}")
    return 1 if any(r.error for r in records) else 0


def experiment_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from . import report
    from .experiment import ExperimentConfig, Setup, run_experiment
    parser = build_experiment_parser(*([prog] if prog else []))
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or not set(kinds) <= set(KINDS):
        parser.error(f"--kinds takes some of {', '.join(KINDS)}")
    try:
        setups = [Setup.parse(s) for s in (args.setup or [])] or ExperimentConfig(args.out).setups
    except ValueError as exc:
        parser.error(str(exc))
    from .schedule import CellTooShort, plan_cell
    ideal = args.ttft + (args.max_tokens or args.tokens) / args.tokens_per_second
    try:
        plan_cell(1, 1, 1, ideal, args.cell_time_limit)
    except CellTooShort as exc:
        parser.error(str(exc))
    server_env = dict(item.partition("=")[::2] for item in args.server_env)
    if args.api_key:
        server_env.setdefault("FLASKAPP_API_KEYS", args.api_key)
    command = " ".join([prog or "python -m flaskapp.loadtest experiment",
                        *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))])
    config = ExperimentConfig(out=args.out, setups=setups, kinds=kinds, concurrency=args.concurrency,
                              rounds=args.rounds, min_requests=args.min_requests,
                              cell_time_limit=args.cell_time_limit, ttft=args.ttft,
                              tokens_per_second=args.tokens_per_second, tokens=args.tokens,
                              max_tokens=args.max_tokens, model=args.model, slo=slo_from(args),
                              sweep_duration=args.sweep_duration, sweep_start=args.sweep_start,
                              sweep_steps=args.sweep_steps,
                              pin=args.pin and len(os.sched_getaffinity(0)) >= 2,
                              loop=args.loop, progress=not args.quiet, command=command,
                              server_env=server_env, api_key=args.api_key)
    cells = run_experiment(config)
    print(report.cells_table(cells, markdown=False))
    print(f"\nreport: {args.out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "experiment":
        return experiment_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    elif not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m flaskapp.loadtest {run,experiment} ...\n\n"
              "  run URL ...          load-test a server at a concurrency or a rate, or search its capacity\n"
              "                       (the word 'run' may be left out)\n"
              "  experiment --out DIR start the servers and run the whole experiment\n\n"
              "Each takes --help.")
        return 0
    return run_main(argv)
