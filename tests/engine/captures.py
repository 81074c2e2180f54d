"""Reading the real captures and replaying event lists through the engine, for the engine tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.ami.events import AmiEvent, EventDecoder, StreamStart
from pbx_bridge.ami.frames import FrameParser, encode_frame
from pbx_bridge.engine.model import CallEnded, CallRecord, Output
from pbx_bridge.engine.policy import PolicySet
from pbx_bridge.engine.tracker import CallTracker

from .truth import capture_path

Item = AmiEvent | StreamStart


@cache
def events(name: str) -> tuple[Item, ...]:
    """The typed events of a capture, in stream order (parsed once per test session)."""
    return tuple(CaptureReader(capture_path(name)))


@dataclass(slots=True)
class Replay:
    """Everything a replay produced: the tracker, every output in order, and the ended records."""

    tracker: CallTracker
    outputs: list[Output] = field(default_factory=list)

    @property
    def records(self) -> list[CallRecord]:
        return [o.record for o in self.outputs if isinstance(o, CallEnded)]


def replay(items: Iterable[Item], policies: PolicySet | None = None) -> Replay:
    """Feed ``items`` to a fresh tracker (every call inside service hours), then close what is open."""
    result = Replay(CallTracker(policies=policies, is_open=None))
    for item in items:
        result.outputs.extend(result.tracker.feed(item))
    result.outputs.extend(result.tracker.close_all())
    return result


def replay_capture(name: str, policies: PolicySet | None = None) -> Replay:
    return replay(events(name), policies)


def decode_frames(frames: Iterable[Mapping[str, str]]) -> list[Item]:
    """Typed events from header dicts, through the real wire path: encode, parse, decode."""
    parser = FrameParser()
    decoder = EventDecoder()
    out: list[Item] = []
    for frame in parser.feed(b"".join(encode_frame(dict(h)) for h in frames)):
        item = decoder.decode(frame)
        if item is not None:
            out.append(item)
    return out
