"""``python -m pbx_bridge.emulator``: write a generated day to disk, or serve AMI traffic on a port.

    python -m pbx_bridge.emulator generate day.ami --truth day.json --agents 50 --calls-per-hour 600 --hours 8
    python -m pbx_bridge.emulator serve --port 5038 --capture tests/fixtures/traces/q_busy_hour.ami --speed 5
    python -m pbx_bridge.emulator serve --port 5038 --agents 8 --calls-per-hour 120 --speed 10

``serve`` accepts the username given with ``--username`` and the secret from
``$AMI_EMULATOR_SECRET`` (a random one is made up and printed otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Sequence

from pbx_bridge.emulator.generator import DayConfig, generate_day, write_capture
from pbx_bridge.emulator.replay import play, read_capture
from pbx_bridge.emulator.server import AmiEmulator


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pbx_bridge.emulator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write a synthetic day as a capture file and its truth JSON")
    gen.add_argument("capture")
    gen.add_argument("--truth")
    srv = sub.add_parser("serve", help="run the emulator and play a capture or a generated day into it")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=5038)
    srv.add_argument("--username", default="bridge")
    srv.add_argument("--capture", help="replay this capture instead of generating traffic")
    srv.add_argument("--speed", type=float, default=1.0, help="time compression (inf: as fast as possible)")
    srv.add_argument("--wait", type=int, default=1, help="logged-in clients to wait for before playing")
    for p in (gen, srv):
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--agents", type=int, default=10)
        p.add_argument("--calls-per-hour", type=float, default=120.0)
        p.add_argument("--hours", type=float, default=1.0)
        p.add_argument("--no-noise", action="store_true", help="leave out Newexten/VarSet")
    gen.add_argument("--start-epoch", type=float, default=None, help="default: now")
    return ap


async def _serve(args: argparse.Namespace) -> int:
    secret = os.environ.get("AMI_EMULATOR_SECRET") or secrets.token_urlsafe(12)
    emu = AmiEmulator(args.host, args.port, args.username, secret)
    await emu.start()
    shown = secret if "AMI_EMULATOR_SECRET" not in os.environ else "$AMI_EMULATOR_SECRET"
    print(f"AMI emulator on {args.host}:{emu.port}, user {args.username}, secret {shown}", file=sys.stderr)
    try:
        await emu.wait_logged_in(args.wait, timeout=None)
        if args.capture:
            sent = await play(emu, read_capture(args.capture), args.speed)
        else:
            events = generate_day(args.seed, args.agents, args.calls_per_hour, args.hours, time.time(),
                                  noise=not args.no_noise)
            sent = await play(emu, events, args.speed, fresh_ids=False)
        print(f"played {sent} events", file=sys.stderr)
        await asyncio.Event().wait()  # keep serving list actions until interrupted
    finally:
        await emu.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.cmd == "generate":
        cfg = DayConfig(seed=args.seed, agents=args.agents, calls_per_hour=args.calls_per_hour, hours=args.hours,
                        start_epoch=args.start_epoch if args.start_epoch is not None else time.time(),
                        noise=not args.no_noise)
        summary = write_capture(cfg, args.capture, args.truth)
        print(f"{summary.events} events, {summary.calls} calls, {summary.bytes} bytes", file=sys.stderr)
        return 0
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
