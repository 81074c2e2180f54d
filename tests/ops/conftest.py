"""Fixtures of the ops-kit tests (metrics/, asterisk_sample/, docker-compose.yml, Dockerfile)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tooling import find_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def require_tool() -> Callable[[str, str], str]:
    """``require_tool(name, package)`` inside a test: see :func:`find_tool`."""
    return find_tool


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO
