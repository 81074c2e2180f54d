"""AMI framing: bytes in, header dictionaries out. Pure and synchronous.

Theory of operation
-------------------
Asterisk writes ``Key: Value\\r\\n`` lines, a message ending with an empty line
(``\\r\\n\\r\\n``). A connection opens with a one-line banner
(``Asterisk Call Manager/11.0.0\\r\\n``) that has no blank line after it, and a
capture of a reconnecting client holds a second banner mid-stream.

The parser works on bytes, never on decoded chunks, so a multi-byte UTF-8
character split across two reads stays whole (panoramisk decodes per chunk and
drops such halves). Each complete message is decoded once, with invalid bytes
turned into U+FFFD and counted, so nothing is lost silently. A message larger
than ``max_frame_bytes`` is skipped up to its terminator and counted: memory
stays bounded even if a peer never sends ``\\r\\n\\r\\n``. Blocks that are neither
an event, a response nor a banner are counted as garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BANNER_PREFIX = b"Asterisk Call Manager/"
TERMINATOR = b"\r\n\r\n"
DEFAULT_MAX_FRAME_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line Asterisk sends when a connection opens (also mid-stream after a reconnect)."""

    version: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI message: an event (``Event:``) or an action response (``Response:``)."""

    headers: dict[str, str]

    @property
    def event(self) -> str | None:
        return self.headers.get("Event")

    @property
    def response(self) -> str | None:
        return self.headers.get("Response")


@dataclass(slots=True)
class ParserStats:
    """What the parser saw; every byte it could not turn into a frame is accounted for here."""

    frames: int = 0
    banners: int = 0
    garbage: int = 0
    oversize: int = 0
    decode_errors: int = 0
    malformed_lines: int = 0
    bytes_in: int = 0

    @property
    def errors(self) -> int:
        return self.garbage + self.oversize + self.decode_errors


def parse_block(block: bytes, stats: ParserStats) -> dict[str, str]:
    """Turn one message (without its terminator) into a header dict.

    Duplicate keys (``ChanVariable``) keep the first value under the plain key and
    later ones under ``Key(name)`` when the value is ``name=value``, else ``Key#n``;
    so a header's type never depends on the data.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8 (a Latin-1 caller name, a corrupt byte): keep the frame, mark the bytes
        # with U+FFFD, and count it.
        stats.decode_errors += 1
        text = block.decode("utf-8", "replace")
    lines = text.split("\r\n")
    # Fast path, done in C: Asterisk writes every header as "Key: Value", keys unique.
    try:
        headers = dict(line.split(": ", 1) for line in lines)
    except ValueError:
        return _parse_lines(lines, stats)
    if len(headers) != len(lines):
        return _parse_lines(lines, stats)
    return headers


def _parse_lines(lines: list[str], stats: ParserStats) -> dict[str, str]:
    """The careful path: missing spaces, duplicate keys, empty or malformed lines."""
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            stats.malformed_lines += 1
            continue
        if value.startswith(" "):
            value = value[1:]
        if key in headers:
            name, eq, rest = value.partition("=")
            alias = f"{key}({name})" if eq else f"{key}#{sum(k.startswith(key) for k in headers)}"
            headers[alias] = rest if eq else value
        else:
            headers[key] = value
    return headers


@dataclass(slots=True)
class FrameParser:
    """Incremental AMI parser: ``feed()`` bytes as they arrive, get complete frames back."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, data: bytes) -> list[Frame | Banner]:
        """Consume ``data`` and return every frame it completes, in order."""
        self.stats.bytes_in += len(data)
        self._buf += data
        out: list[Frame | Banner] = []
        buf = self._buf
        start = 0
        while True:
            if not self._skipping and buf.startswith(BANNER_PREFIX, start):
                eol = buf.find(b"\r\n", start)
                if eol < 0:
                    break
                self.stats.banners += 1
                out.append(Banner(buf[start + len(BANNER_PREFIX) : eol].decode("ascii", "replace")))
                start = eol + 2
                continue
            end = buf.find(TERMINATOR, start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif end - start > self.max_frame_bytes:
                self.stats.oversize += 1
            else:
                self._emit(bytes(buf[start:end]), out)
            start = end + 4
        del buf[:start]
        # Room for a frame of exactly max_frame_bytes whose terminator is still arriving.
        if len(buf) > self.max_frame_bytes + len(TERMINATOR) - 1:
            # No terminator within the limit: drop what we hold and skip to the next one.
            if not self._skipping:
                self.stats.oversize += 1
            self._skipping = True
            del buf[: len(buf) - 3]  # keep a possible partial terminator
        return out

    def _emit(self, block: bytes, out: list[Frame | Banner]) -> None:
        block = block.strip(b"\r\n")
        if not block:
            return
        headers = parse_block(block, self.stats)
        if "Event" in headers or "Response" in headers:
            self.stats.frames += 1
            out.append(Frame(headers))
        else:
            self.stats.garbage += 1

    @property
    def pending_bytes(self) -> int:
        """Bytes held while waiting for a terminator (bounded by ``max_frame_bytes``)."""
        return len(self._buf)


def encode_frame(headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """Serialise one AMI message with CRLF line ends and the blank-line terminator."""
    items = headers.items() if isinstance(headers, dict) else headers
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode("utf-8") + b"\r\n"
