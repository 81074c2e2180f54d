"""Fixtures of the MQTT tests: Debian's mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mosquitto_broker import Broker
from tooling import find_tool


@pytest.fixture
def mosquitto() -> str:
    """Path of Debian's mosquitto (skip, or fail under CI, without it)."""
    return find_tool("mosquitto", "mosquitto")


@pytest.fixture
def broker(mosquitto: str, tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto on a free loopback port, always terminated after the test."""
    b = Broker(mosquitto, tmp_path)
    try:
        b.start()
        yield b
    finally:
        b.stop()
