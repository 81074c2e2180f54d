"""Replay a capture (or any event stream) through the emulator with fresh ids and timestamps.

The rewriting is pure and lazy: :func:`read_capture` turns a capture's bytes
into ``(timestamp, headers)`` pairs, :func:`retime` moves the first event to
a new start and divides every gap by a speed factor, :func:`refresh_ids`
gives every channel a new ``Uniqueid``/``Linkedid`` (consistently in every
header that holds one: ``DestUniqueid``, ``SwapUniqueid``,
``LocalOneUniqueid``, ``DestUniqueId``..., and inside ``VarSet`` values such
as a MixMonitor file name) and optionally new channel-name counters and
bridge ids. Only :func:`play` touches the network: it emits each event when
the wall clock reaches its new timestamp.

A uniqueid keeps Asterisk's shape ``<epoch>.<counter>``: the epoch is the
(new) time the id was first seen, which for a channel is its ``Newchannel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pbx_bridge.ami.frames import Banner, Frame, FrameParser
from pbx_bridge.errors import CaptureError

if TYPE_CHECKING:
    from pbx_bridge.emulator.server import AmiEmulator

Event = tuple[float, dict[str, str]]

UNIQUEID_RE = re.compile(r"^\d+\.\d+$")
_EMBEDDED_UID_RE = re.compile(r"\d{9,11}\.\d+")
_CHANNEL_SUFFIX_RE = re.compile(r"-([0-9a-f]{8})(?=;[12]|$|<|>|,)")
_CHANNEL_VALUE_RE = re.compile(r"^[A-Za-z0-9_]+/\S+-[0-9a-f]{8}(;[12])?$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Headers whose free text may quote a uniqueid (MixMonitor(${UNIQUEID}.wav) and the like).
_TEXT_KEYS = frozenset({"Value", "AppData", "ApplicationData", "Data", "File", "Filename"})
# Events a client sees only because it logged in; the emulator sends its own.
_LOGIN_EVENTS = frozenset({"SuccessfulAuth"})


@dataclass(frozen=True, slots=True)
class Capture:
    """The events of a capture file, without what belongs to the capturing client's login.

    Attributes:
        events: ``(timestamp, headers)`` in stream order; an event without a
            ``Timestamp`` gets the previous event's.
        reconnects: indexes into ``events`` where the capturing client had
            reconnected (a second banner mid-stream, e.g. after a PBX restart).
        banner: version from the first banner, if any.
    """

    events: list[Event]
    reconnects: tuple[int, ...]
    banner: str | None


def parse_capture(data: bytes) -> Capture:
    """Split a capture's bytes into events, dropping banners, login responses and login events."""
    parser = FrameParser(max_frame_bytes=max(1 << 20, len(data) + 1))
    events: list[Event] = []
    reconnects: list[int] = []
    banner: str | None = None
    last_ts = 0.0
    after_login = False
    for item in parser.feed(data):
        if isinstance(item, Banner):
            if banner is None:
                banner = item.version
            else:
                reconnects.append(len(events))
            continue
        assert isinstance(item, Frame)
        headers = item.headers
        if "Response" in headers:
            after_login = True
            continue
        name = headers.get("Event")
        if name in _LOGIN_EVENTS or (name == "FullyBooted" and after_login):
            after_login = False
            continue
        after_login = False
        with contextlib.suppress(KeyError, ValueError):
            last_ts = float(headers["Timestamp"])
        events.append((last_ts, headers))
    if parser.pending_bytes and not events:
        raise CaptureError("no complete AMI frame in capture")
    return Capture(events=events, reconnects=tuple(reconnects), banner=banner)


def read_capture(path: str | Path) -> Capture:
    """Read a ``.ami`` capture file (see :func:`parse_capture`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
    return parse_capture(data)


def retime(events: Iterable[Event], start: float, speed: float = 1.0) -> Iterator[Event]:
    """Shift so the first event is at ``start`` and divide every gap by ``speed``.

    ``speed=math.inf`` puts every event at ``start`` (order is kept). The
    ``Timestamp`` header is rewritten; events without one stay without.
    """
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    first: float | None = None
    for ts, headers in events:
        if first is None:
            first = ts
        new = start if math.isinf(speed) else start + (ts - first) / speed
        out = dict(headers)
        if "Timestamp" in out:
            out["Timestamp"] = f"{new:.6f}"
        yield new, out


def _is_uid_key(key: str) -> bool:
    low = key.lower()
    return low.endswith(("uniqueid", "linkedid")) and "bridge" not in low


def _is_bridge_key(key: str) -> bool:
    low = key.lower()
    return low.endswith("bridgeuniqueid") or low == "bridgeid"


def _is_channel_key(key: str) -> bool:
    return key.endswith("Channel") or key in ("Newname", "Oldname", "Original", "Clone")


@dataclass(slots=True)
class IdRewriter:
    """Maps one stream's ids to fresh ones, the same way in every header.

    Attributes:
        uid_counter: the counter part of the next new uniqueid.
        channel_offset: added (mod 2**32) to every ``-xxxxxxxx`` channel-name counter; None keeps names.
        fresh_bridges: give every bridge a new random UUID.
        rng: source of the new bridge UUIDs.
    """

    uid_counter: int = 1
    channel_offset: int | None = None
    fresh_bridges: bool = False
    rng: random.Random = field(default_factory=random.Random)
    _uids: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _bridges: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def uid(self, old: str, ts: float) -> str:
        """The new uniqueid for ``old`` (created on first sight, epoch from ``ts``)."""
        new = self._uids.get(old)
        if new is None:
            new = self._uids[old] = f"{int(ts)}.{self.uid_counter}"
            self.uid_counter += 1
        return new

    def bridge(self, old: str) -> str:
        """The new bridge id for ``old``."""
        new = self._bridges.get(old)
        if new is None:
            new = self._bridges[old] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return new

    def _channel(self, value: str) -> str:
        offset = self.channel_offset
        assert offset is not None
        return _CHANNEL_SUFFIX_RE.sub(lambda m: f"-{(int(m.group(1), 16) + offset) % (1 << 32):08x}", value)

    def rewrite(self, ts: float, headers: dict[str, str]) -> dict[str, str]:
        """Return ``headers`` with every id replaced (the input is not modified)."""
        out: dict[str, str] = {}
        uids = self._uids
        for key, value in headers.items():
            new = value
            if _is_uid_key(key) and UNIQUEID_RE.match(value):
                new = self.uid(value, ts)
            elif _is_bridge_key(key):
                if self.fresh_bridges and _UUID_RE.match(value):
                    new = self.bridge(value)
            elif self.channel_offset is not None and (
                _is_channel_key(key) or (key in _TEXT_KEYS and _CHANNEL_VALUE_RE.match(value))
            ):
                new = self._channel(value)
            elif key in _TEXT_KEYS and uids and _EMBEDDED_UID_RE.search(value):
                new = _EMBEDDED_UID_RE.sub(lambda m: uids.get(m.group(0), m.group(0)), value)
            out[key] = new
        return out


def refresh_ids(
    events: Iterable[Event],
    *,
    uid_start: int = 1,
    channel_offset: int | None = None,
    fresh_bridges: bool = False,
    seed: int | None = None,
) -> Iterator[Event]:
    """Give every uniqueid/linkedid (and optionally channel name and bridge) a fresh value.

    Apply after :func:`retime` so new uniqueids carry the new epoch.
    """
    rewriter = IdRewriter(uid_counter=uid_start, channel_offset=channel_offset, fresh_bridges=fresh_bridges,
                          rng=random.Random(seed))
    for ts, headers in events:
        yield ts, rewriter.rewrite(ts, headers)


async def play(
    emulator: AmiEmulator,
    events: Capture | Iterable[Event],
    speed: float = 1.0,
    *,
    fresh_ids: bool = True,
    clock: Callable[[], float] = time.time,
    seed: int | None = None,
) -> int:
    """Emit ``events`` through ``emulator``, the first one now, gaps divided by ``speed``.

    With ``fresh_ids`` uniqueids, channel-name counters and bridge ids are
    replaced, so the same capture can be played twice into one engine. A
    :class:`Capture`'s reconnect points drop every client (the client saw a
    reconnect there). At ``speed=math.inf`` the player waits for slow sockets
    to drain every 1024 events instead of sleeping. Returns the number of events sent.
    """
    reconnects: set[int] = set()
    if isinstance(events, Capture):
        reconnects = set(events.reconnects)
        events = events.events
    rng = random.Random(seed)
    timed: Iterable[Event] = retime(events, clock(), speed)
    if fresh_ids:
        timed = refresh_ids(timed, uid_start=rng.randint(1, 9999), channel_offset=rng.randint(1, 1 << 20),
                            fresh_bridges=True, seed=rng.getrandbits(32))
    fast = math.isinf(speed)
    sent = 0
    for index, (ts, headers) in enumerate(timed):
        if index in reconnects:
            emulator.drop_clients()
        if fast:
            if sent % 1024 == 1023:
                await emulator.drain(timeout=emulator.write_timeout)
        else:
            delay = ts - clock()
            if delay > 0.001:
                await asyncio.sleep(delay)
            elif sent % 256 == 255:
                await asyncio.sleep(0)  # let the writers run during a burst
        await emulator.emit(headers)
        sent += 1
    await emulator.drain(timeout=emulator.write_timeout)
    return sent
