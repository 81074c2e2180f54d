"""The daemon killed with SIGKILL mid-stream and started again: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import urllib.request
from pathlib import Path
from typing import Any

from daemon_support import SECRET, USER
from tooling import free_port

from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.emulator.replay import read_capture
from pbx_bridge.service import SQLITE_FILE

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"


async def start(emu_port: int, http_port: int, data: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PBX_BRIDGE_AMI_SECRET": SECRET,
        "PBX_BRIDGE_AMI_PORT": str(emu_port),
        "PBX_BRIDGE_AMI_USERNAME": USER,
        "PBX_BRIDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "PBX_BRIDGE_STORE_PATH": str(data),
        "PBX_BRIDGE_STORE_BATCH_INTERVAL_S": "0.05",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "run", "--log-level", "WARNING",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def health(port: int) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    try:
        return await asyncio.to_thread(get)
    except OSError:
        return {}


def rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data / SQLITE_FILE) as db:
        return db.execute(sql).fetchall()


async def test_sigkill_then_restart_settles_open_calls(emulator: AmiEmulator, tmp_path: Path) -> None:
    """After SIGKILL and a restart, calls that ended meanwhile are closed as partial and none is stored twice."""
    events = read_capture(TRACES / "q_busy_hour.ami").events
    third = len(events) // 3
    data = tmp_path / "data"
    http = free_port()
    first = await start(emulator.port, http, data)
    try:
        await emulator.wait_logged_in(1, timeout=15)
        for _, headers in events[:third]:
            await emulator.emit(headers)
        await emulator.drain(5)

        async def consumed() -> bool:
            return (await health(http)).get("events", 0) >= third

        for _ in range(200):
            if await consumed():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the writer commit records and open-call markers
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    markers = rows(data, "SELECT call_id FROM open_calls")
    assert markers, "calls in progress at the kill must have left markers"
    stored_before = {r[0] for r in rows(data, "SELECT call_id FROM calls")}

    # While the bridge is down the PBX goes on: these events are lost to it.
    for _, headers in events[third : 2 * third]:
        await emulator.emit(headers)
    await emulator.drain(5)

    second = await start(emulator.port, http, data)
    try:
        await emulator.wait_logged_in(1, timeout=15)
        for _ in range(100):
            if (await health(http)).get("ami_connected"):
                break
            await asyncio.sleep(0.05)
        for _, headers in events[2 * third :]:
            await emulator.emit(headers)
        await emulator.drain(5)
        await asyncio.sleep(1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 20)
    assert second.returncode == 0, err.decode()[-2000:]

    calls = dict(rows(data, "SELECT call_id, partial FROM calls"))
    assert stored_before <= set(calls)
    for (call_id,) in markers:
        assert call_id in calls, f"call {call_id} open at the kill was never settled"
    assert not rows(data, "SELECT call_id FROM open_calls"), "open-call markers left behind"
    # Calls wholly after the restart are complete; those that spanned it are partial.
    assert any(calls[cid] for (cid,) in markers)
