"""The ``pbx-bridge`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pbx_bridge import __version__, qa_cli
from pbx_bridge.errors import PbxBridgeError

EXIT_USAGE = 2


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="settings file (default: built-in defaults = the service standard)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pbx-bridge", description=__doc__)
    ap.add_argument("--version", action="version", version=f"pbx-bridge {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="measure the calls of a raw AMI capture file")
    rp.add_argument("capture", type=Path, help="raw AMI byte stream (banner, responses, events)")
    _add_config(rp)
    rp.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    rp.add_argument("--ignore-hours", action="store_true", help="treat every call as inside service hours")
    rp.add_argument("--strict", action="store_true", help="exit 1 if any event could not be placed")
    run = sub.add_parser("run", help="run the daemon against a real Asterisk")
    _add_config(run)
    run.add_argument("--log-level", default="INFO")

    demo = sub.add_parser("demo", help="run the daemon against the built-in AMI emulator (no PBX needed)")
    _add_config(demo)
    demo.add_argument("--listen", default="127.0.0.1:8080", help="HTTP address of the wallboard/metrics")
    demo.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    demo.add_argument("--mqtt", metavar="URL", help="publish to this MQTT broker (mqtt://HOST:PORT)")
    demo.add_argument("--agents", type=int, default=8, help="agents on the simulated floor")
    demo.add_argument("--calls-per-hour", type=float, default=120.0)
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: a new day each run)")
    demo.add_argument("--data", type=Path, help="store directory (default: a fresh temporary one)")
    demo.add_argument("--log-level", default="INFO")

    bench = sub.add_parser("bench", help="measure throughput, latency, memory and replay speed on this machine")
    bench.add_argument("--events", type=int, help="events per throughput run (default 150000)")
    bench.add_argument("--calls", type=int, help="finished calls for the memory curve (default 1000000)")
    bench.add_argument("--repeat", type=int, help="runs per throughput mode; medians are printed (default 5)")
    bench.add_argument("--rate", type=float, help="latency runs: events/s the sender paces at (default 10000)")
    bench.add_argument("--latency-s", type=float, help="latency runs: seconds of traffic each (default 5)")
    bench.add_argument("--agents", type=int, help="agents of the generated centre (default 500)")
    bench.add_argument("--calls-per-hour", type=float, help="its arrival rate (default 4000)")
    bench.add_argument("--hours", type=float, help="length of the replayed day (default 8)")
    bench.add_argument("--seed", type=int, help="generator seed (default 1)")
    bench.add_argument("--sections", help="comma-separated subset of parsers,throughput,latency,replay,memory")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (its figures mean nothing)")

    qa_cli.add_parsers(sub)
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from pbx_bridge.config import load_settings
    from pbx_bridge.logs import configure
    from pbx_bridge.service import run_daemon

    configure(args.log_level)
    settings = load_settings(args.config)
    return asyncio.run(run_daemon(settings))


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from pbx_bridge.demo import DemoOptions, run_demo
    from pbx_bridge.logs import configure

    configure(args.log_level)
    options = DemoOptions(
        config=args.config,
        listen=args.listen,
        speed=args.speed,
        mqtt=args.mqtt,
        agents=args.agents,
        calls_per_hour=args.calls_per_hour,
        seed=args.seed,
        data=args.data,
    )
    return asyncio.run(run_demo(options))


def cmd_replay(args: argparse.Namespace) -> int:
    from pbx_bridge.config import load_settings
    from pbx_bridge.export import jsonl_line, to_csv, to_table
    from pbx_bridge.replay import ReplaySummary, build_tracker, replay

    settings = load_settings(args.config)
    tracker = build_tracker(settings, ignore_hours=args.ignore_hours)
    summary = ReplaySummary()
    out = sys.stdout
    if args.format == "jsonl":
        for record in replay(args.capture, tracker, summary):
            out.write(jsonl_line(record.to_dict()) + "\n")
    else:
        rows = [r.to_dict() for r in replay(args.capture, tracker, summary)]
        out.write(to_csv(rows, bom=False) if args.format == "csv" else to_table(rows))
    out.flush()
    print(f"replay: {summary.line()}", file=sys.stderr)
    if args.strict and (summary.unplaced or summary.parse_errors):
        print("replay: --strict: some events could not be placed", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import asyncio

    from pbx_bridge.bench import BenchOptions, run_bench

    fields = BenchOptions.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return asyncio.run(run_bench(BenchOptions(**given)))


COMMANDS = {"replay": cmd_replay, "run": cmd_run, "demo": cmd_demo, "bench": cmd_bench, **qa_cli.COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PbxBridgeError as exc:
        print(f"pbx-bridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
