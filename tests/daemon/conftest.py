"""A real daemon against the AMI emulator, over loopback TCP, through panoramisk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_support import SECRET, USER, Running, daemon_settings

from pbx_bridge.daemon import Daemon
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.service import make_store


@pytest.fixture
async def emulator() -> AsyncIterator[AmiEmulator]:
    emu = AmiEmulator(host="127.0.0.1", port=0, username=USER, secret=SECRET)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start(port: int, *, wait: bool = True, **ami: Any) -> Running:
        settings = daemon_settings(port, tmp_path / "data", **ami)
        daemon = Daemon(settings, make_store(settings))
        task = asyncio.create_task(daemon.run())
        r = Running(daemon, task)
        running.append(r)
        if wait:
            started = asyncio.create_task(daemon.started.wait())
            done, _ = await asyncio.wait({started, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert started in done, "daemon did not start"
        return r

    yield start
    for r in running:
        if not r.task.done():
            with contextlib.suppress(Exception):
                await r.stop()
