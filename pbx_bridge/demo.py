"""``pbx-bridge demo``: the real daemon against the built-in AMI emulator, no PBX needed.

The emulator listens on a free loopback port and plays a generated call-centre day (in the
event shapes of real Asterisk 22 captures) at the chosen speed; the daemon connects to it
through panoramisk exactly as it would to Asterisk. The store goes to a fresh temporary
directory (or ``--data``), never to a deployment's data directory. The demo's floor works
around the clock, so every hour counts as service hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from pbx_bridge.config import Settings, load_settings
from pbx_bridge.emulator import AmiEmulator, generate_day, play
from pbx_bridge.service import build_daemon

log = structlog.get_logger(__name__)

DEMO_USER = "pbx-bridge-demo"
DAY_HOURS = 24.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    config: Path | None = None
    listen: str = "127.0.0.1:8080"
    speed: float = 1.0
    mqtt: str | None = None
    agents: int = 8
    calls_per_hour: float = 120.0
    seed: int | None = None
    data: Path | None = None


def demo_settings(base: Settings, emulator_port: int, secret: str, data: Path, options: DemoOptions) -> Settings:
    """The user's settings (or defaults), pointed at the emulator and a private store."""
    settings = replace(
        base,
        ami=replace(base.ami, host="127.0.0.1", port=emulator_port, username=DEMO_USER, secret=secret),
        http=replace(base.http, listen=options.listen),
        store=replace(base.store, path=data),
        calendars=base.calendars.ignoring_hours(),
    )
    if options.mqtt:
        settings = replace(settings, mqtt=replace(settings.mqtt, enabled=True, url=options.mqtt))
    return settings


async def run_demo(options: DemoOptions) -> int:
    base = load_settings(options.config)
    secret = secrets.token_urlsafe(16)
    data = options.data or Path(tempfile.mkdtemp(prefix="pbx-bridge-demo-"))
    seed = options.seed if options.seed is not None else secrets.randbelow(1 << 31)
    emulator = AmiEmulator(host="127.0.0.1", port=0, username=DEMO_USER, secret=secret)
    await emulator.start()
    try:
        settings = demo_settings(base, emulator.port, secret, data, options)
        daemon = build_daemon(settings)
        run = asyncio.create_task(daemon.run(), name="daemon")
        started = asyncio.create_task(daemon.started.wait())
        await asyncio.wait({run, started}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            started.cancel()
            return run.result()
        url = f"http://{settings.http.host}:{daemon.http_port}"
        print(
            f"pbx-bridge demo: {options.agents} agents, {options.calls_per_hour:g} calls/h, speed ×{options.speed:g}"
            f" (seed {seed})\n"
            f"  wallboard  {url}/\n  metrics    {url}/metrics\n  health     {url}/healthz\n"
            f"  live JSON  {url}/api/live\n  store      {data}\n"
            "Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        traffic = asyncio.create_task(_traffic(emulator, options, seed), name="traffic")
        await asyncio.wait({run, traffic}, return_when=asyncio.FIRST_COMPLETED)
        if traffic.done() and not traffic.cancelled() and traffic.exception() is not None:
            log.error("demo_traffic_failed", error=repr(traffic.exception()))
            daemon.stop()
            await run
            return 1
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        return await run
    finally:
        await emulator.close()
        if options.data is None:
            shutil.rmtree(data, ignore_errors=True)


async def _traffic(emulator: AmiEmulator, options: DemoOptions, seed: int) -> None:
    """Play generated days back to back until cancelled."""
    while True:
        events = generate_day(
            seed, options.agents, options.calls_per_hour, DAY_HOURS, time.time(), queues=("support", "sales")
        )
        sent = await play(emulator, events, options.speed, fresh_ids=True, seed=seed)
        log.info("demo_day_played", events=sent)
        seed += 1
