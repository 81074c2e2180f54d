"""Helpers of the fault suite: a generated day, its uninterrupted measurement, a daemon to break.

The suite plays a generated call-centre day verbatim (the generator's own ids and timestamps)
through the AMI emulator into a real daemon, breaks something on the way, and compares what the
daemon stored with what a fresh in-process tracker makes of the same stream without the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sqlite3
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import aiomqtt
import pytest
from tooling import find_tool

from pbx_bridge.ami.events import EventDecoder
from pbx_bridge.ami.frames import Frame
from pbx_bridge.config import Settings, load_settings
from pbx_bridge.daemon import Daemon, Extras
from pbx_bridge.emulator import AmiEmulator, generate_day
from pbx_bridge.emulator.generator import CallMix
from pbx_bridge.engine.model import CallEnded, CallRecord
from pbx_bridge.replay import build_tracker
from pbx_bridge.service import SQLITE_FILE, make_store

USER = "bridge"
SECRET = "faults-secret-0123456789"
START = 1_795_000_000.0
# Every behaviour of the generator shows up often: holds, transfers, ring-no-answer, abandons.
MIX = CallMix(
    direct=0.08, outbound=0.08, short_abandon=0.08, rona=0.15, hold=0.4, long_hold=0.3, end_on_hold=0.2,
    blind=0.12, attended=0.12, agent_hangs_up=0.3,
)  # fmt: skip
Event = tuple[float, dict[str, str]]
Json = dict[str, Any]


# ----------------------------------------------------------------------------- the day


@dataclass
class Day:
    """A generated day: its events in stream order and the generator's ground truth per call."""

    events: list[Event]
    truth: list[Json]

    def number(self, t: Mapping[str, Any]) -> str:
        """The customer's number of a truth call (the caller, or the callee of a callback)."""
        if t.get("direction") == "outbound":
            return str((t.get("plan") or {}).get("number") or t.get("dialed"))
        return str(t["caller_number"])

    def ts(self, index: int) -> float:
        """The ``Timestamp`` of an event, as the bridge reads it."""
        return float(self.events[index][1]["Timestamp"])


def make_day(seed: int, *, agents: int = 10, calls_per_hour: float = 150.0, hours: float = 2.0,
             start: float = START) -> Day:  # fmt: skip
    truth: list[Json] = []
    events = list(generate_day(seed, agents, calls_per_hour, hours, start, on_call=truth.append, mix=MIX))
    return Day(events, truth)


def customer_number(record: Mapping[str, Any]) -> str | None:
    """The customer's number of a record: the caller of an inbound call, the callee of an outbound one."""
    if record.get("direction") == "outbound":
        return record.get("callee")
    if record.get("direction") == "inbound":
        return record.get("caller")
    return None


@dataclass
class Reference:
    """The records of an uninterrupted replay, and where each call lies in the stream.

    ``events[call_id]`` are the indexes of the events carrying one of the call's Linkedids, up to
    and including the one that ended it (later legs' hangups do not change the record).
    """

    records: dict[str, CallRecord]
    events: dict[str, list[int]]

    def span(self, call_id: str) -> tuple[int, int]:
        indexes = self.events[call_id]
        return indexes[0], indexes[-1]


def reference(events: list[Event], settings: Settings) -> Reference:
    """What a fresh tracker, configured like the daemon, makes of the stream without any fault."""
    tracker = build_tracker(settings)
    decoder = EventDecoder()
    records: dict[str, CallRecord] = {}
    ended: dict[str, int] = {}
    for i, (_, headers) in enumerate(events):
        event = decoder.decode(Frame(headers))
        assert event is not None
        for o in tracker.feed(event):
            if isinstance(o, CallEnded):
                assert o.record.call_id not in records, f"the reference ended {o.record.call_id} twice"
                records[o.record.call_id] = o.record
                ended[o.record.call_id] = i
    assert not tracker.open_calls, "the generated stream should end every call"
    owner = {lid: cid for cid, rec in records.items() for lid in (cid, *rec.linkedids)}
    indexes: dict[str, list[int]] = {cid: [] for cid in records}
    for i, (_, headers) in enumerate(events):
        cid = owner.get(headers.get("Linkedid", ""))
        if cid is not None and i <= ended[cid]:
            indexes[cid].append(i)
    for cid, found in indexes.items():
        if not found or found[-1] != ended[cid]:
            found.append(ended[cid])
    return Reference(records, indexes)


def check_reference(day: Day, expected: Reference) -> dict[str, str]:
    """Every truth call has exactly one complete reference record; return number → call id."""
    by_number: dict[str, str] = {}
    for record in expected.records.values():
        assert not record.partial, record.call_id
        number = customer_number(record.to_dict())
        assert number is not None, f"{record.call_id}: the reference has a call without a customer"
        assert number not in by_number, f"two reference records for {number}"
        by_number[number] = record.call_id
    assert {day.number(t) for t in day.truth} == set(by_number), "reference records do not match the truth"
    return by_number


# ----------------------------------------------------------------------------- settings and daemon


def settings_env(ami_port: int, data: Path, http_listen: str = "127.0.0.1:0") -> dict[str, str]:
    return {
        "PBX_BRIDGE_AMI_SECRET": SECRET,
        "PBX_BRIDGE_AMI_PORT": str(ami_port),
        "PBX_BRIDGE_AMI_USERNAME": USER,
        "PBX_BRIDGE_HTTP_LISTEN": http_listen,
        "PBX_BRIDGE_STORE_PATH": str(data),
        "PBX_BRIDGE_STORE_BATCH_INTERVAL_S": "0.05",
        "PBX_BRIDGE_AMI_RECONNECT_MIN_S": "0.05",
        "PBX_BRIDGE_AMI_RECONNECT_MAX_S": "0.3",
        # The watchdog's pings would be extra actions in the emulator's count; faults here are abrupt.
        "PBX_BRIDGE_AMI_PING_INTERVAL_S": "3600",
    }


def process_settings(ami_port: int, data: Path) -> Settings:
    """The settings ``spawn_daemon`` gives a daemon process (service hours as configured)."""
    return load_settings(None, settings_env(ami_port, data))


def fault_settings(ami_port: int, data: Path, **ami: Any) -> Settings:
    """Settings of an in-process daemon: every hour counts as service hours."""
    settings = process_settings(ami_port, data)
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
        return await asyncio.wait_for(self.task, 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"


async def start_daemon(settings: Settings, *, extras: Extras | None = None) -> Running:
    daemon = Daemon(settings, make_store(settings), extras=extras)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({started, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        started.cancel()
        raise AssertionError(f"daemon did not start: {task.exception() if task.done() else 'timeout'}")
    return Running(daemon, task)


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings, *, extras: Extras | None = None) -> AsyncIterator[Running]:
    """A daemon in this process; stopped (and its store closed) whatever happens."""
    r = await start_daemon(settings, extras=extras)
    try:
        yield r
    finally:
        if not r.task.done():
            with contextlib.suppress(Exception):
                await r.stop()
        elif not r.task.cancelled() and r.task.exception() is not None:
            await bury(r)


async def bury(r: Running) -> None:
    """Release what a daemon that died of an exception left open (its test reports the death).

    A daemon whose shutdown itself failed leaves its HTTP server and sockets behind; their
    ResourceWarnings would otherwise surface in whichever test runs next.
    """
    runner = r.daemon._runner
    if runner is not None:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    with contextlib.suppress(Exception):
        await r.daemon.ami.close()
    with contextlib.suppress(Exception):
        await r.daemon.store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def died(r: Running) -> str | None:
    """Why the daemon's task ended on its own (None while it runs)."""
    if not r.task.done():
        return None
    if r.task.cancelled():
        return "cancelled"
    exc = r.task.exception()
    if exc is None:
        return f"returned {r.task.result()}"
    inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return "; ".join(f"{type(e).__name__}: {e}" for e in inner)


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll until ``predicate`` holds (the timeout only keeps a broken run from hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- feeding events


@dataclass
class Feeder:
    """Emits events through the emulator, counting those a logged-in client was there to receive."""

    emu: AmiEmulator
    delivered: int = 0
    lost: int = 0

    async def emit(self, events: Iterable[Event], drain_every: int = 200) -> None:
        for n, (_, headers) in enumerate(events, start=1):
            if self.emu.logged_in_clients and not self.emu.silent:
                self.delivered += 1
            else:
                self.lost += 1
            self.emu.emit_nowait(headers)
            if n % drain_every == 0:
                # Pace to the reader: the emulator drops a client that falls 4 MB behind.
                await self.emu.drain(10)
        await self.emu.drain(10)


async def consumed(r: Running, feeder: Feeder, extra: int = 0, timeout: float = 60.0) -> None:
    """Wait until the daemon has read every delivered event (plus a FullyBooted per login) and applied it.

    Counted on the AMI frames, not the engine's events: a resync feeds the engine queue-member
    states of its own.
    """
    d = r.daemon

    def done() -> bool:
        return d.ami.counters.frames >= feeder.delivered + d.ami.counters.logins + extra and d.sink.queue.empty()

    await wait_for(done, timeout, what=f"{feeder.delivered} delivered events consumed")


def resyncs(logs: list[MutableMapping[str, Any]]) -> int:
    """How many resyncs the AMI client has handed to the engine (structlog ``ami_resynced``)."""
    return sum(1 for e in logs if e.get("event") == "ami_resynced")


async def relogged(r: Running, emu: AmiEmulator, logins: int, logs: list[MutableMapping[str, Any]]) -> None:
    """Wait for login number ``logins`` and for the engine to have applied its resync.

    Events emitted after this reach the engine after the resync (see ``test_events_during_resync``
    for what happens to events that arrive while a resync is under way).
    """
    d = r.daemon
    await wait_for(lambda: d.ami.counters.logins >= logins, what=f"login {logins}")
    await emu.wait_logged_in(1, timeout=10)
    await wait_for(lambda: resyncs(logs) >= logins, what=f"resync {logins}")
    await wait_for(d.sink.queue.empty, what="the resync applied")


# ----------------------------------------------------------------------------- reading what was stored


def db_file(data: Path) -> Path:
    return data / SQLITE_FILE


def query(data: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_file(data), timeout=30)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def stored_calls(data: Path) -> dict[str, Json]:
    """The ``calls`` table as record dicts by call id; fails if a call id is there twice."""
    rows = query(data, "SELECT call_id, record_json FROM calls")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a call id is stored twice"
    return {call_id: json.loads(body) for call_id, body in rows}


def by_customer(stored: Mapping[str, Json]) -> dict[str, list[str]]:
    """Customer number → the stored call ids carrying it (more than one is a double count)."""
    out: dict[str, list[str]] = {}
    for call_id, record in stored.items():
        number = customer_number(record)
        if number is not None:
            out.setdefault(number, []).append(call_id)
    return out


def integrity(data: Path) -> str:
    return str(query(data, "PRAGMA integrity_check")[0][0])


# ----------------------------------------------------------------------------- HTTP


async def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url) as response,
    ):
        return response.status, await response.text()


async def healthz(base: str) -> tuple[int, Json]:
    status, body = await http_get(f"{base}/healthz")
    return status, json.loads(body)


async def serving(r: Running) -> Json:
    """/healthz of a daemon that must be alive: 200 and JSON, or the test fails saying why it is not."""
    try:
        status, body = await healthz(r.url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        status, body = 0, {"error": type(exc).__name__}
    if status != 200:
        await asyncio.wait({r.task}, timeout=15)  # a daemon on its way down: let it finish, then say why
        pytest.fail(f"/healthz answered {status} {body}; the daemon: {died(r) or 'still running'}")
    return body


def metric(body: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) in a Prometheus text exposition."""
    total = 0.0
    found = False
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or head.startswith(name + "{"):
            total += float(value)
            found = True
    assert found, f"{name} not exposed"
    return total


# ----------------------------------------------------------------------------- the daemon as a process


async def spawn_daemon(ami_port: int, http_port: int, data: Path, log: Path) -> asyncio.subprocess.Process:
    """``python -m pbx_bridge run`` configured through PBX_BRIDGE_* variables; stderr to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env.update(settings_env(ami_port, data, f"127.0.0.1:{http_port}"))
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pbx_bridge", "run", "--log-level", "INFO",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


async def process_health(port: int) -> Json:
    try:
        _, body = await healthz(f"http://127.0.0.1:{port}")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    return body


async def process_events(port: int) -> float:
    """AMI events a daemon process has applied (``pbx_bridge_ami_events_total``, every type)."""
    try:
        _, body = await http_get(f"http://127.0.0.1:{port}/metrics")
    except (aiohttp.ClientError, TimeoutError):
        return -1.0
    return metric(body, "pbx_bridge_ami_events_total") if "pbx_bridge_ami_events_total" in body else 0.0


async def end_process(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal the process and reap it (killed if it does not exit in time)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


# ----------------------------------------------------------------------------- mosquitto


def find_mosquitto() -> str:
    """Debian's broker (skip without it, or fail under CI)."""
    return find_tool("mosquitto", "mosquitto")


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class MqttWatcher:
    """A plain subscriber that keeps every message it gets, in order (QoS 1)."""

    port: int
    topic_filter: str
    messages: list[Received] = field(default_factory=list)
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttWatcher:
        self._client = aiomqtt.Client("127.0.0.1", self.port, timeout=10)
        await self._client.__aenter__()
        await self._client.subscribe(self.topic_filter, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(self._client.__aexit__(None, None, None), 5)

    async def _collect(self) -> None:
        assert self._client is not None
        with contextlib.suppress(aiomqtt.MqttError):  # the broker was killed under us
            async for m in self._client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.messages.append(Received(m.topic.value, payload, m.retain))

    def records(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for m in self.messages:
            if m.topic.endswith("/record"):
                body = json.loads(m.payload)
                out[body["call_id"]] = body
        return out

    def retained_state(self, *, only_retained: bool = False) -> dict[str, bytes]:
        """The latest payload of every state and status topic (an empty payload clears a topic).

        With ``only_retained``, only what the broker delivered from its store at subscription.
        """
        out: dict[str, bytes] = {}
        for m in self.messages:
            if only_retained and not m.retain:
                continue
            if m.topic.endswith(("/state", "/status")):
                if m.payload:
                    out[m.topic] = m.payload
                else:
                    out.pop(m.topic, None)
        return out
