"""Debian tools the tests use (mosquitto, chromium, promtool, PostgreSQL): find them, or say why not.

A developer without a Debian package gets a clear skip with the install hint. CI (``CI=true``)
must run every test, so there a missing tool is a broken setup and the test fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn

import pytest

# Debian installs daemons such as mosquitto in /usr/sbin, which is not on every user's PATH.
SBIN = "/usr/sbin"


def missing(message: str) -> NoReturn:
    """Skip the test, or fail it under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def find_tool(name: str, package: str) -> str:
    """Path of the command ``name`` (also looked up in /usr/sbin), or :func:`missing`."""
    path = shutil.which(name) or shutil.which(name, path=SBIN)
    if path is None:
        missing(f"{name} not found: install Debian's {package} package (apt-get install -y {package})")
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1 (a server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
