"""Reading raw AMI captures: the byte stream a client received, banner and all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pbx_bridge.ami.events import AmiEvent, EventDecoder, StreamStart
from pbx_bridge.ami.frames import BANNER_PREFIX, FrameParser
from pbx_bridge.errors import CaptureError

CHUNK = 1 << 16
_AMI_STARTS = (BANNER_PREFIX, b"Event:", b"Response:", b"Action:")


@dataclass(slots=True)
class CaptureReader:
    """Iterates the typed events of a capture file, in order, with parser statistics."""

    path: Path
    parser: FrameParser = field(default_factory=FrameParser)
    decoder: EventDecoder = field(default_factory=EventDecoder)

    def __iter__(self) -> Iterator[AmiEvent | StreamStart]:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError as exc:
            raise CaptureError(f"{self.path}: no such file") from exc
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot read: {exc.strerror}") from exc
        with fh:
            head = fh.read(CHUNK)
            if not head.lstrip().startswith(_AMI_STARTS):
                raise CaptureError(
                    f"{self.path}: not an AMI capture (expected the 'Asterisk Call Manager/' banner "
                    "or an 'Event:' line at the start)"
                )
            chunk = head
            while chunk:
                for frame in self.parser.feed(chunk):
                    item = self.decoder.decode(frame)
                    if item is not None:
                        yield item
                chunk = fh.read(CHUNK)
