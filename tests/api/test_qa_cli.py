"""``pbx-bridge calls`` and ``pbx-bridge report`` read the store and show what the API shows."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_support import FakeDaemon, api_settings, auth, filled_store
from structlog.testing import capture_logs

from pbx_bridge import qa_cli
from pbx_bridge.config import ApiRole, load_settings
from pbx_bridge.engine.model import CallRecord
from pbx_bridge.errors import StoreError
from pbx_bridge.service import SQLITE_FILE
from pbx_bridge.web.api import register_api


@pytest.fixture
def config(tmp_path: Path, records: tuple[CallRecord, ...], now: float) -> Path:
    """A settings file whose store directory holds the captured calls (the store is closed again)."""
    data = tmp_path / "data"
    path = tmp_path / "pbx-bridge.toml"
    path.write_text(f'[store]\npath = "{data.as_posix()}"\n', encoding="utf-8")

    async def fill() -> None:
        store = await filled_store(data / SQLITE_FILE, api_settings(), records, now)
        await store.close()

    asyncio.run(fill())
    return path


def _api_json(config: Path, now: float, path: str, params: dict[str, str]) -> Any:
    """What the API answers to a qa token over the same store."""

    async def get() -> Any:
        settings = load_settings(config)
        store = await filled_store(settings.store.path / SQLITE_FILE, api_settings(), (), now)
        try:
            app = web.Application()
            register_api(app, FakeDaemon(api_settings(), store, now))
            async with TestClient(TestServer(app)) as client:
                resp = await client.get(path, params=params, headers=auth(ApiRole.QA))
                assert resp.status == 200
                return await resp.json()
        finally:
            await store.close()

    return asyncio.run(get())


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands configure logging process-wide; in tests their logs are captured instead."""
    monkeypatch.setattr(qa_cli, "_configure_logs", lambda level: None)
    with capture_logs():
        yield


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="pbx-bridge")
    qa_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    capsys.readouterr()  # drop what the fixtures printed
    status = qa_cli.COMMANDS[args.command](args)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_calls_json_matches_the_api(config: Path, now: float, capsys: pytest.CaptureFixture[str]) -> None:
    """``pbx-bridge calls --format json`` prints the page GET /api/v1/calls returns for the same filters."""
    status, out, _ = _run(
        [
            "calls",
            "--queue",
            "support",
            "--has-hold",
            "true",
            "--limit",
            "5",
            "--format",
            "json",
            "--config",
            str(config),
        ],
        capsys,
    )
    assert status == 0
    api = _api_json(config, now, "/api/v1/calls", {"queue": "support", "has_hold": "true", "limit": "5"})
    assert json.loads(out) == api
    assert api["total"] > 5


def test_calls_csv_is_for_excel(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--format csv --all`` writes every matching call as the API's CSV, BOM and Chinese names included."""
    status, out, _ = _run(["calls", "--caller", "5551*", "--all", "--format", "csv", "--config", str(config)], capsys)
    assert status == 0 and out.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"), newline="")))
    assert {"张伟", "王芳", "李娜"} <= {row["caller_name"] for row in rows}
    assert all(row["caller"].startswith("5551") for row in rows)


def test_calls_table_for_the_terminal(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default table lists the page and says on stderr how many calls match."""
    status, out, err = _run(["calls", "--outcome", "abandoned", "--config", str(config)], capsys)
    assert status == 0
    assert out.splitlines()[0].split()[:2] == ["arrived_at", "caller"]
    assert "calls: 8 of 8" in err


@pytest.mark.parametrize(
    ("argv", "path", "params"),
    [
        (
            ["scorecard", "--period", "week", "--date", "2026-11-24"],
            "/api/v1/scorecards",
            {"period": "week", "date": "2026-11-24"},
        ),
        (
            ["scorecard", "--by", "queue", "--date", "2026-11-24"],
            "/api/v1/scorecards",
            {"by": "queue", "date": "2026-11-24"},
        ),
        (
            ["intervals", "--date", "2026-11-24", "--queue", "support"],
            "/api/v1/intervals",
            {"date": "2026-11-24", "queue": "support"},
        ),
        (
            ["service-level", "--start", "2026-11-24", "--end", "2026-11-24"],
            "/api/v1/service-level",
            {"start": "2026-11-24", "end": "2026-11-24"},
        ),
    ],
)
def test_reports_match_the_api(
    config: Path, now: float, capsys: pytest.CaptureFixture[str], argv: list[str], path: str, params: dict[str, str]
) -> None:
    """``pbx-bridge report ... --format json`` prints what the matching API endpoint returns."""
    status, out, _ = _run(["report", *argv, "--format", "json", "--config", str(config)], capsys)
    assert status == 0
    assert json.loads(out) == _api_json(config, now, path, params)


def test_report_table_and_csv(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reports print as a table or as CSV rows with a header."""
    status, out, _ = _run(["report", "scorecard", "--date", "2026-11-24", "--config", str(config)], capsys)
    assert status == 0 and "PJSIP/1001" in out and out.split()[0] == "key"
    status, out, _ = _run(
        [
            "report",
            "service-level",
            "--start",
            "2026-11-24",
            "--end",
            "2026-11-24",
            "--format",
            "csv",
            "--config",
            str(config),
        ],
        capsys,
    )
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"), newline="")))
    assert [row["id"] for row in rows] == ["SL1", "SL2", "SL3", "SL4"]


def test_callbacks_report(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``report callbacks`` lists the callers not reached, with their deadline."""
    status, out, _ = _run(
        ["report", "callbacks", "--since", "2026-11-20", "--format", "json", "--config", str(config)], capsys
    )
    assert status == 0
    numbers = {item["number"] for item in json.loads(out)["items"]}
    assert "5550103" in numbers and "5550104" not in numbers


def test_bad_option_names_it(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad filter value exits 2 naming the option, as the API names the parameter."""
    status, _, err = _run(["calls", "--talk-min", "abc", "--config", str(config)], capsys)
    assert status == 2
    assert "--talk-min" in err and "number" in err


def test_missing_store_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a store file the commands say where they looked instead of creating an empty one."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{(tmp_path / "none").as_posix()}"\n', encoding="utf-8")
    with pytest.raises(StoreError, match="no call store"):
        _run(["calls", "--config", str(cfg)], capsys)
    assert not (tmp_path / "none" / SQLITE_FILE).exists()
