"""Helpers for running a real daemon against the AMI emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pbx_bridge.config import Settings, load_settings
from pbx_bridge.daemon import Daemon

USER = "bridge"
SECRET = "test-secret-0123456789"


def daemon_settings(port: int, data: Path, **ami: Any) -> Settings:
    env: Mapping[str, str] = {
        "PBX_BRIDGE_AMI_SECRET": SECRET,
        "PBX_BRIDGE_AMI_PORT": str(port),
        "PBX_BRIDGE_AMI_USERNAME": USER,
        "PBX_BRIDGE_HTTP_LISTEN": "127.0.0.1:0",
        "PBX_BRIDGE_STORE_PATH": str(data),
        "PBX_BRIDGE_STORE_BATCH_INTERVAL_S": "0.05",
        "PBX_BRIDGE_AMI_RECONNECT_MIN_S": "0.1",
        "PBX_BRIDGE_AMI_RECONNECT_MAX_S": "0.5",
    }
    settings = load_settings(None, env)
    settings = replace(settings, calendars=settings.calendars.ignoring_hours())
    if ami:
        settings = replace(settings, ami=replace(settings.ami, **ami))
    return settings


@dataclass
class Running:
    daemon: Daemon
    task: asyncio.Task[int]

    async def stop(self) -> int:
        self.daemon.stop()
        return await asyncio.wait_for(self.task, 15)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
