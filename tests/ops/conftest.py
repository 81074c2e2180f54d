"""Fixtures of the ops-kit tests (metrics/, asterisk_sample/, docker-compose.yml, Dockerfile)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_tool(name: str, package: str) -> str:
    """Path of the command ``name``; when it is missing, skip the test, or fail it under CI.

    CI must run these tests, so there a missing tool is a broken setup, not a reason to skip.
    Locally a developer without the Debian package still gets a green run with a clear skip.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found: install Debian's {package} package (apt-get install -y {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def require_tool() -> Callable[[str, str], str]:
    """``require_tool(name, package)`` inside a test: see :func:`find_tool`."""
    return find_tool


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO
