"""Replaying a capture through the engine: the pure pipeline behind ``pbx-bridge replay``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.ami.connection import engine_parser
from pbx_bridge.config import Settings
from pbx_bridge.engine.model import CallEnded, CallRecord, Output
from pbx_bridge.engine.tracker import CallTracker


def build_tracker(settings: Settings, ignore_hours: bool = False) -> CallTracker:
    """A tracker configured from settings (``ignore_hours``: every call inside service hours)."""
    calendars = settings.calendars
    return CallTracker(
        policies=settings.policies,
        is_open=None if ignore_hours else (lambda queue, ts: calendars.for_queue(queue).is_open(ts)),
        internal_endpoints=settings.pbx.internal_endpoints,
    )


@dataclass(slots=True)
class ReplaySummary:
    calls: int = 0
    events: int = 0
    unhandled: int = 0
    unplaced: int = 0
    parse_errors: int = 0
    details: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"{self.calls} calls, {self.events} events, {self.unplaced} events the engine could not place, "
            f"{self.unhandled} of types it does not use, {self.parse_errors} unparsable frames"
        )
        if self.details:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.details.items())) + ")"
        return text


def replay(path: Path, tracker: CallTracker, summary: ReplaySummary) -> Iterator[CallRecord]:
    """Yield each finished call of the capture, then any call still open at its end (partial)."""
    reader = CaptureReader(path, parser=engine_parser())  # the daemon's parser: skims dialplan noise
    for item in reader:
        yield from _records(tracker.feed(item), summary)
    yield from _records(tracker.close_all(), summary)
    stats = tracker.stats
    summary.events = stats.events
    summary.unhandled = sum(stats.unhandled.values())
    summary.unplaced = stats.unplaced_total
    summary.parse_errors = reader.parser.stats.errors
    summary.details = dict(stats.unplaced)


def _records(outputs: list[Output], summary: ReplaySummary) -> Iterator[CallRecord]:
    for out in outputs:
        if isinstance(out, CallEnded):
            summary.calls += 1
            yield out.record
