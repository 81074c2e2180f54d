"""Typed AMI events: the engine's input. Frames are validated here, at the boundary.

Asterisk prefixes a second channel snapshot with ``Dest`` (DialBegin, AgentCalled…); both
snapshots become :class:`Snapshot`. Everything else stays in ``headers``, read through
:meth:`AmiEvent.get`, which turns Asterisk's empty values and ``<unknown>`` into ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pbx_bridge.ami.frames import Banner, Frame

_UNKNOWN = ("", "<unknown>")


def _clean(value: str | None) -> str | None:
    return None if value is None or value in _UNKNOWN else value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A channel as one event describes it."""

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
        uniqueid = h.get(prefix + "Uniqueid")
        if not uniqueid:
            return None
        state = h.get(prefix + "ChannelState", "")
        return cls(
            uniqueid=uniqueid,
            linkedid=h.get(prefix + "Linkedid") or uniqueid,
            channel=h.get(prefix + "Channel", ""),
            state=int(state) if state.isdigit() else None,
            caller_num=_clean(h.get(prefix + "CallerIDNum")),
            caller_name=_clean(h.get(prefix + "CallerIDName")),
            connected_num=_clean(h.get(prefix + "ConnectedLineNum")),
            context=_clean(h.get(prefix + "Context")),
            exten=_clean(h.get(prefix + "Exten")),
        )


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
    def dest(self) -> Snapshot | None:
        if self._dest is _LAZY:
            self._dest = Snapshot.from_headers(self.headers, "Dest")
        return self._dest

    def get(self, key: str) -> str | None:
        """A header's value, ``None`` when absent, empty or ``<unknown>``."""
        return _clean(self.headers.get(key))

    def __repr__(self) -> str:
        return f"AmiEvent({self.name!r}, ts={self.ts!r}, headers={dict(self.headers)!r})"


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A connection (re)opened: events may have been missed before this point."""

    ts: float
    version: str


@dataclass(slots=True)
class EventDecoder:
    """Turns frames into typed events, carrying the stream's clock across unstamped events.

    Events without ``Timestamp`` (``FullyBooted`` right after login, or a PBX configured
    without ``timestampevents``) get the last timestamp seen, or ``fallback_clock`` when
    nothing was stamped yet; they are counted so the operator can see the setting is off.
    """

    last_ts: float = 0.0
    unstamped: int = 0
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
        stamped = False
        ts = self.last_ts
        if raw_ts:
            try:
                ts = float(raw_ts)
                stamped = True
            except ValueError:
                pass
        if stamped:
            self.last_ts = max(self.last_ts, ts)
        else:
            self.unstamped += 1
            if not self.last_ts and fallback_clock is not None:
                ts = fallback_clock
        return AmiEvent(name, ts, headers=h, stamped=stamped)
