"""Fixtures of the fault suite: the AMI emulator and Debian's mosquitto, always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from faults_support import SECRET, USER, find_mosquitto
from mosquitto_broker import Broker

from pbx_bridge.emulator import AmiEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[AmiEmulator]:
    emu = AmiEmulator(host="127.0.0.1", port=0, username=USER, secret=SECRET)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()


@pytest.fixture
def fault_broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto on a free loopback port (skip without it, or fail under CI)."""
    broker = Broker(find_mosquitto(), tmp_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
