"""Typed AMI events: the engine's input. Frames are validated here, at the boundary.

Asterisk prefixes a second channel snapshot with ``Dest`` (DialBegin, AgentCalled…); both
snapshots become :class:`Snapshot`. Everything else stays in ``headers``, read through
:meth:`AmiEvent.get`, which turns Asterisk's empty values and ``<unknown>`` into ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pbx_bridge.ami.frames import Banner, Frame

# Values Asterisk writes for "none": read as None (the tracker's fast path reads them too).
UNKNOWN_VALUES = ("", "<unknown>")  # what Asterisk sends for "no value"


class Snapshot(NamedTuple):
    """A channel as one event describes it.

    A named tuple rather than a frozen dataclass: one is built for most events, and a tuple
    is made in one step where a frozen dataclass sets its nine fields one by one.
    """

    uniqueid: str
    linkedid: str
    channel: str
    state: int | None
    caller_num: str | None
    caller_name: str | None
    connected_num: str | None
    context: str | None
    exten: str | None

    @classmethod
    def from_headers(cls, h: Mapping[str, str], prefix: str = "") -> Snapshot | None:
        # Called for many events: header names are built once per prefix, the UNKNOWN_VALUES test inlined.
        keys = _SNAPSHOT_KEYS.get(prefix) or _snapshot_keys(prefix)
        get = h.get
        uniqueid = get(keys[0])
        if not uniqueid:
            return None
        state = get(keys[3], "")
        num = get(keys[4])
        name = get(keys[5])
        connected = get(keys[6])
        context = get(keys[7])
        exten = get(keys[8])
        return cls(
            uniqueid,
            get(keys[1]) or uniqueid,
            get(keys[2], ""),
            int(state) if state.isdigit() else None,
            None if num is None or num in UNKNOWN_VALUES else num,
            None if name is None or name in UNKNOWN_VALUES else name,
            None if connected is None or connected in UNKNOWN_VALUES else connected,
            None if context is None or context in UNKNOWN_VALUES else context,
            None if exten is None or exten in UNKNOWN_VALUES else exten,
        )


_SNAPSHOT_FIELDS = (
    "Uniqueid",
    "Linkedid",
    "Channel",
    "ChannelState",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "Context",
    "Exten",
)
_SNAPSHOT_KEYS: dict[str, tuple[str, ...]] = {"": _SNAPSHOT_FIELDS}


def _snapshot_keys(prefix: str) -> tuple[str, ...]:
    keys = _SNAPSHOT_KEYS[prefix] = tuple(prefix + k for k in _SNAPSHOT_FIELDS)
    return keys


class _Lazy:
    """Marks a snapshot not parsed yet (``None`` means the event has none)."""


_LAZY: Any = _Lazy()


class AmiEvent:
    """One AMI event with its Asterisk timestamp (epoch seconds, UTC). Read-only.

    The channel snapshots are parsed on first use: most of a PBX's events (``VarSet``,
    ``Newexten``, RTCP) are skipped by name and never pay for them.
    """

    __slots__ = ("_chan", "_dest", "headers", "name", "stamped", "ts")

    def __init__(
        self,
        name: str,
        ts: float,
        *,
        chan: Snapshot | None = _LAZY,
        dest: Snapshot | None = _LAZY,
        headers: Mapping[str, str] | None = None,
        stamped: bool = True,
    ) -> None:
        self.name = name
        self.ts = ts
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        # False when the event carried no Timestamp header and ``ts`` is the stream's last known time.
        self.stamped = stamped
        self._chan = chan
        self._dest = dest

    @property
    def chan(self) -> Snapshot | None:
        if self._chan is _LAZY:
            self._chan = Snapshot.from_headers(self.headers)
        return self._chan

    @property
    def chan_parsed(self) -> bool:
        """Whether ``chan`` is known already (given, or parsed); until then it comes from ``headers``."""
        return self._chan is not _LAZY

    @property
    def dest(self) -> Snapshot | None:
        if self._dest is _LAZY:
            self._dest = Snapshot.from_headers(self.headers, "Dest")
        return self._dest

    def get(self, key: str) -> str | None:
        """A header's value, ``None`` when absent, empty or ``<unknown>``."""
        value = self.headers.get(key)
        return None if value is None or value in UNKNOWN_VALUES else value

    def __repr__(self) -> str:
        return f"AmiEvent({self.name!r}, ts={self.ts!r}, headers={dict(self.headers)!r})"


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A connection (re)opened: events may have been missed before this point."""

    ts: float
    version: str


_MIN_EPOCH = 0.0
_MAX_EPOCH = 4_102_444_800.0  # 2100-01-01
_BAD_TS = float("nan")


@dataclass(slots=True)
class EventDecoder:
    """Turns frames into typed events, carrying the stream's clock across unstamped events.

    Events without ``Timestamp`` (``FullyBooted`` right after login, or a PBX configured
    without ``timestampevents``) get the last timestamp seen, or ``fallback_clock`` when
    nothing was stamped yet; they are counted so the operator can see the setting is off.
    """

    last_ts: float = 0.0
    unstamped: int = 0
    bad_timestamps: int = 0
    responses: int = 0

    def decode(self, item: Frame | Banner, fallback_clock: float | None = None) -> AmiEvent | StreamStart | None:
        if isinstance(item, Banner):
            return StreamStart(self.last_ts, item.version)
        h = item.headers
        name = h.get("Event")
        if name is None:
            self.responses += 1
            return None
        raw_ts = h.get("Timestamp")
        if raw_ts:
            try:
                ts = float(raw_ts)
            except ValueError:
                ts = _BAD_TS
            if not _MIN_EPOCH < ts < _MAX_EPOCH:  # also false for NaN
                # inf, nan, 1e20: no real Asterisk clock; such a time would break every
                # duration and date computed from it. Counted, and the stream's clock used.
                self.bad_timestamps += 1
            else:  # the usual case: one float() and one comparison per event
                if ts > self.last_ts:  # noqa: PLR1730 - max() costs a call on every event
                    self.last_ts = ts
                return AmiEvent(name, ts, headers=h)
        ts = self.last_ts
        self.unstamped += 1
        if not ts and fallback_clock is not None:
            ts = fallback_clock
        return AmiEvent(name, ts, headers=h, stamped=False)
