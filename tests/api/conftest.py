"""Fixtures of the QA API tests: a store filled from the captures, served by ``register_api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_support import Client, FakeDaemon, MakeClient, all_records, api_settings, filled_store

from pbx_bridge.config import Settings
from pbx_bridge.engine.model import CallRecord
from pbx_bridge.web.api import register_api


@pytest.fixture(scope="session")
def records() -> tuple[CallRecord, ...]:
    """The captured calls plus the two made-up ones."""
    return all_records()


@pytest.fixture(scope="session")
def now(records: tuple[CallRecord, ...]) -> float:
    """A clock an hour after the last call, so nothing depends on today's date."""
    return max(r.ended_at for r in records) + 3600.0


@pytest.fixture
async def make_client(tmp_path: Path, records: tuple[CallRecord, ...], now: float) -> AsyncIterator[MakeClient]:
    """``await make_client(settings=None, now=None)``: the API over a filled store; all closed after the test."""
    opened: list[tuple[Client, FakeDaemon]] = []

    async def make(settings: Settings | None = None, clock: float | None = None) -> Client:
        settings = settings or api_settings()
        store = await filled_store(tmp_path / f"db{len(opened)}" / "calls.sqlite3", settings, records, now)
        daemon = FakeDaemon(settings, store, now if clock is None else clock)
        app = web.Application()
        try:
            register_api(app, daemon)
            client = TestClient(TestServer(app))
            await client.start_server()
        except BaseException:
            await store.close()
            raise
        opened.append((client, daemon))
        return client

    try:
        yield make
    finally:
        for client, daemon in opened:
            try:
                await client.close()
            finally:
                await daemon.store.close()


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    """The API with three tokens (wallboard, qa, admin) over the filled store."""
    return await make_client()
