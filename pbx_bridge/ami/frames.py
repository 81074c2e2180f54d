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

Speed (see ``pbx_bridge/bench.py``): most of a chunk is framed with one ``bytes.split``
(the careful frame-by-frame loop runs only while a banner is in the buffer), headers are
split in C (``map(str.split, …)``), and a parser built with ``skim`` does not build header
dictionaries for events its consumer reads by name only (dialplan noise: ``Newexten``,
``VarSet``…): those frames carry just ``Event`` and ``Timestamp``. A skimmed frame is still
decoded, so invalid bytes are still counted; it is parsed in full anyway when it carries an
``ActionID`` or one of the ``skim_unless`` markers (``MIXMONITOR_FILENAME`` on a ``VarSet``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat

BANNER_PREFIX = b"Asterisk Call Manager/"
TERMINATOR = b"\r\n\r\n"
DEFAULT_MAX_FRAME_BYTES = 1 << 20
EVENT_PREFIX = b"Event: "
_TIMESTAMP_LINE = b"\r\nTimestamp:"
_ACTION_ID = b"ActionID:"
# Endless iterators shared by every ``map(str.split, lines, _SEP, _ONCE)``: ``line.split(": ", 1)`` in C.
_SEP = repeat(": ")
_ONCE = repeat(1)


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


_new_object = object.__new__
_set_headers = Frame.__dict__["headers"].__set__


def _frame(headers: dict[str, str]) -> Frame:
    """``Frame(headers)`` without the frozen dataclass's ``__init__`` (two C calls; the parser's hot path)."""
    frame: Frame = _new_object(Frame)
    _set_headers(frame, headers)
    return frame


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
        headers = dict(map(str.split, lines, _SEP, _ONCE))
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
    """Incremental AMI parser: ``feed()`` bytes as they arrive, get complete frames back.

    Attributes:
        max_frame_bytes: a longer message is skipped and counted (``stats.oversize``).
        stats: what the parser saw.
        skim: names of events whose frames need only ``Event`` and ``Timestamp``: the consumer
            skips them by name (their other headers are not parsed; see the module docstring).
        skim_unless: byte strings that make a skimmable frame parse in full anyway.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    stats: ParserStats = field(default_factory=ParserStats)
    skim: Iterable[str] = ()
    skim_unless: tuple[bytes, ...] = ()
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False
    _skim: dict[bytes, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.skim = frozenset(self.skim)
        self._skim = {EVENT_PREFIX + name.encode("utf-8"): name for name in self.skim}

    def feed(self, data: bytes) -> list[Frame | Banner]:
        """Consume ``data`` and return every frame it completes, in order."""
        self.stats.bytes_in += len(data)
        buf = self._buf
        searched = max(len(buf) - 3, 0)  # a terminator may straddle the old tail and the new data
        buf += data
        out: list[Frame | Banner] = []
        if BANNER_PREFIX in buf:
            # A greeting is framed by its line, not by a blank line: go frame by frame.
            self._feed_careful(out)
        elif buf.find(TERMINATOR, searched) >= 0:
            # No banner: framing is exactly a split at every terminator, left to right.
            region = bytes(buf)
            blocks = region.split(TERMINATOR)
            rest = blocks.pop()
            del buf[: len(buf) - len(rest)]
            # One scan of the whole chunk usually tells that no message in it needs the
            # per-message checks of skimming (no ActionID, no marker).
            self._emit_all(blocks, out, checks=self._needs_checks(region))
        # Room for a frame of exactly max_frame_bytes whose terminator is still arriving.
        if len(buf) > self.max_frame_bytes + len(TERMINATOR) - 1:
            # No terminator within the limit: drop what we hold and skip to the next one.
            if not self._skipping:
                self.stats.oversize += 1
            self._skipping = True
            del buf[: len(buf) - 3]  # keep a possible partial terminator
        return out

    def _feed_careful(self, out: list[Frame | Banner]) -> None:
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
                self._emit_all((bytes(buf[start:end]),), out, checks=True)
            start = end + 4
        del buf[:start]

    def _needs_checks(self, data: bytes) -> bool:
        if not self._skim:
            return False
        return _ACTION_ID in data or any(marker in data for marker in self.skim_unless)

    def _emit_all(self, blocks: Iterable[bytes], out: list[Frame | Banner], checks: bool) -> None:
        """Turn raw messages (terminators removed) into frames: the hot loop, kept flat.

        Equivalent to ``Frame(parse_block(block))`` per message (or, for a skimmed one,
        ``Frame({"Event": …, "Timestamp": …})``), with the calls and attribute lookups hoisted.
        ``checks=False`` promises that no message holds an ``ActionID`` or a ``skim_unless`` marker.
        """
        stats = self.stats
        it = iter(blocks)
        if self._skipping:  # the first message is the end of one skipped as oversize
            self._skipping = False
            next(it, None)
        limit = self.max_frame_bytes
        skim = self._skim
        unless = self.skim_unless
        append = out.append
        emitted = len(out)
        try:
            for raw in it:
                if len(raw) > limit:
                    stats.oversize += 1
                    continue
                block = raw.strip(b"\r\n")
                if not block:
                    continue
                if skim:
                    eol = block.find(b"\r\n")
                    name = skim.get(block[:eol] if eol >= 0 else block)  # keyed by the whole "Event: X" line
                    if name is not None and checks:
                        if _ACTION_ID in block:
                            name = None
                        for marker in unless:
                            if marker in block:
                                name = None
                    if name is not None:
                        at = block.find(_TIMESTAMP_LINE)
                        if at < 0 or block.startswith(b" ", at + 12):
                            if not block.isascii():
                                try:
                                    block.decode("utf-8")
                                except UnicodeDecodeError:
                                    stats.decode_errors += 1  # counted exactly as the full parse counts it
                            if at < 0:
                                append(_frame({"Event": name}))
                            else:
                                end = block.find(b"\r\n", at + 13)
                                value = block[at + 13 : end] if end >= 0 else block[at + 13 :]
                                append(_frame({"Event": name, "Timestamp": value.decode("utf-8", "replace")}))
                            continue
                # parse_block, inlined for the usual case (valid UTF-8, "Key: Value" lines, unique keys).
                try:
                    text = block.decode("utf-8")
                except UnicodeDecodeError:
                    headers = parse_block(block, stats)
                else:
                    lines = text.split("\r\n")
                    try:
                        headers = dict(map(str.split, lines, _SEP, _ONCE))
                    except ValueError:
                        headers = _parse_lines(lines, stats)
                    else:
                        if len(headers) != len(lines):
                            headers = _parse_lines(lines, stats)
                if "Event" in headers or "Response" in headers:
                    append(_frame(headers))
                else:
                    stats.garbage += 1
        finally:
            stats.frames += len(out) - emitted

    @property
    def pending_bytes(self) -> int:
        """Bytes held while waiting for a terminator (bounded by ``max_frame_bytes``)."""
        return len(self._buf)


def encode_frame(headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """Serialise one AMI message with CRLF line ends and the blank-line terminator."""
    items = headers.items() if isinstance(headers, dict) else headers
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode("utf-8") + b"\r\n"
