"""Fast, seeded AMI frame fuzzing: real capture frames, mutated at the byte level.

Hypothesis is far too slow for a million frames, so this is a plain ``random.Random`` walk over
the frames of every real capture (in stream order most of the time, so the engine builds real
calls, and at random otherwise), each frame possibly mutated: headers dropped, duplicated,
renamed or garbled, values replaced (empty, huge, non-numbers, other calls' ids, ``nan``),
invalid UTF-8, frames cut short (terminated, or run into the next frame), random event names,
pure garbage, oversize frames and stray banners.

The generator knows exactly what it put on the wire: ``blocks`` (byte runs ended by the blank
line, each of which the parser must count as a frame, garbage or oversize) and ``banners``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pbx_bridge.ami.frames import BANNER_PREFIX, TERMINATOR, Frame, FrameParser
from pbx_bridge.engine.tracker import IGNORED_EVENTS

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
NAMES = (
    "Newchannel", "Newstate", "NewCallerid", "VarSet", "Rename", "LocalBridge", "DialBegin", "DialEnd",
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentConnect", "AgentComplete",
    "AgentRingNoAnswer", "Pickup", "BridgeEnter", "BridgeLeave", "BridgeDestroy", "Hold", "Unhold",
    "BlindTransfer", "AttendedTransfer", "HangupRequest", "SoftHangupRequest", "Hangup", "Shutdown",
    "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "QueueMemberStatus", "QueueMemberPenalty",
    "QueueMemberRinginuse", "CoreShowChannel", "Cdr", "UserEvent", "", " ", "Event", "hangup", "HANGUP",
    "Newchannel\x00", "新通道", *sorted(IGNORED_EVENTS)[:5],
)  # fmt: skip
WEIRD_VALUES = (
    b"", b" ", b"<unknown>", b"-1", b"0", b"99999999999999999999999", b"nan", b"inf", b"-inf", b"1e308",
    b"1e20", b"-1e20", b"0x10", b"6 ", b"Up", b"ANSWER", b"NOANSWER", b"Success", b"Fail", b"4", b"16",
    b"\xff\xfe\xfd", b"\xe5\xbc", b"Local/1001@agents-00000001;1", b"Local/;2", b"PJSIP/", b"/", b";2",
    b"1795451314.18", b"1.1", b"a=b", b"=", b"\t", "张伟".encode(), b"%s%n", b"\\r\\n",
)  # fmt: skip

KEYS = (b"", b" ", b"X-Junk", b"uniqueid", b"EVENT", b"Linkedid", b"Timestamp", b"DestUniqueid", b"ActionID")
GARBAGE = b"abc XYZ\t\x00\x7f\xc3\xa9\xff;=/-.0123456789"  # no ':' and no line break: never a header


@dataclass
class Wire:
    """What one ``FrameFuzzer.chunks`` run has put on the wire so far."""

    frames: int = 0  # fuzzed frames generated (a merged truncation is two frames, one block)
    blocks: int = 0  # byte runs ended by the blank line
    banners: int = 0
    oversize: int = 0


@cache
def base_frames() -> tuple[tuple[bytes, ...], ...]:
    """Every frame of every real capture, in capture order, as its encoded header lines."""
    out: list[tuple[bytes, ...]] = []
    for path in sorted(TRACES.glob("*.ami")):
        parser = FrameParser(max_frame_bytes=1 << 24)
        for item in parser.feed(path.read_bytes()):
            if isinstance(item, Frame):
                out.append(tuple(f"{k}: {v}".encode() for k, v in item.headers.items()))
    return tuple(out)


class FrameFuzzer:
    """Yields chunks of fuzzed AMI bytes; ``wire`` accounts for what they hold."""

    def __init__(
        self, seed: int, max_frame_bytes: int, *, allow_shutdown: bool = True, oversize_rate: float = 0.004
    ) -> None:
        self.rng = random.Random(seed)
        self.max_frame_bytes = max_frame_bytes
        self.frames = base_frames()
        self.allow_shutdown = allow_shutdown
        self.oversize_rate = oversize_rate
        self.wire = Wire()
        self._cursor = 0
        self._pass = 0  # each walk over the captures gives their channels new uniqueids
        self._id_lines = [
            tuple(j for j, line in enumerate(f) if line.split(b": ", 1)[0].endswith((b"niqueid", b"inkedid")))
            for f in self.frames
        ]
        rng = self.rng
        self._uids = [line.split(b": ", 1)[1] for f in self.frames[:3000] for line in f if b"niqueid: " in line]
        # A few oversize frames, made once: random printable header lines, no blank line inside.
        self._oversize = [
            b"Event: Huge\r\n"
            + b"\r\n".join(
                b"X%d: " % i + bytes(rng.choice(b"abcdefghij0123456789") for _ in range(200))
                for i in range(max_frame_bytes // 200 + k)
            )
            for k in (1, 3, max_frame_bytes // 200)
        ]

    # ------------------------------------------------------------------ one frame

    def _pick(self) -> list[bytes]:
        rng = self.rng
        if rng.random() < 0.75:
            self._cursor = (self._cursor + 1) % len(self.frames)
            if self._cursor == 0:
                self._pass += 1
            index = self._cursor
        else:
            index = rng.randrange(len(self.frames))
        out = list(self.frames[index])
        if self._pass:
            prefix = b"%d" % self._pass
            for j in self._id_lines[index]:
                key, _, value = out[j].partition(b": ")
                out[j] = key + b": " + prefix + value
        if not self.allow_shutdown and out and out[0] == b"Event: Shutdown":
            out[0] = b"Event: ShutdownNot"
        return out

    def _value(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return rng.choice(WEIRD_VALUES)
        if r < 0.6 and self._uids:
            return rng.choice(self._uids)
        if r < 0.8:
            return bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 40)))
        if r < 0.95:
            return str(rng.randrange(-(10**6), 10**6)).encode()
        return b"v" * rng.randrange(1000, 5000)

    def _mutate(self, lines: list[bytes]) -> list[bytes]:
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            if not lines:
                lines = [b"Event: " + rng.choice(NAMES).encode()]
            i = rng.randrange(len(lines))
            kind = rng.randrange(8)
            if kind == 0:  # drop a header (Event too, sometimes)
                del lines[i]
            elif kind == 1:  # duplicate one
                lines.insert(rng.randrange(len(lines) + 1), lines[i])
            elif kind == 2 or kind == 3:  # another value
                key = lines[i].split(b": ", 1)[0]
                lines[i] = key + b": " + self._value()
            elif kind == 4:  # another key
                value = lines[i].split(b": ", 1)[-1]
                key = rng.choice(
                    (b"", b" ", b"X-Junk", b"uniqueid", b"EVENT", b"Linkedid", b"Timestamp", b"DestUniqueid")
                )
                lines[i] = key + b": " + value
            elif kind == 5:  # a line that is not "Key: Value"
                lines[i] = rng.choice((lines[i].replace(b": ", b":", 1), lines[i].replace(b": ", b" ", 1), b":", b"x"))
            elif kind == 6:  # invalid UTF-8 somewhere
                at = rng.randrange(len(lines[i]) + 1)
                lines[i] = (
                    lines[i][:at]
                    + bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 4)))
                    + lines[i][at:]
                )
            else:  # a random event name
                name = rng.choice(NAMES) if rng.random() < 0.7 else self._value().decode("latin-1")
                if not self.allow_shutdown and name.lower().strip() == "shutdown":
                    name = "NotShutdown"
                lines.insert(0, b"Event: " + name.encode("utf-8", "replace"))
                lines = [ln for j, ln in enumerate(lines) if j == 0 or not ln.startswith(b"Event: ")]
        return lines

    @staticmethod
    def _valid(block: bytes) -> bool:
        """A block the parser sees as exactly one unit (frame, garbage or oversize)."""
        return (
            bool(block.strip(b"\r\n"))
            and TERMINATOR not in block
            and not block.startswith(BANNER_PREFIX)
            # A block ending in CRLF would end one line early and push that CRLF into the next one.
            and not block.endswith(b"\r\n")
        )

    def _block(self) -> tuple[bytes, int]:
        """One block (without its terminator) and how many fuzzed frames it holds."""
        rng = self.rng
        r = rng.random()
        if r < self.oversize_rate:
            self.wire.oversize += 1
            return rng.choice(self._oversize), 1
        if r < 0.046 + self.oversize_rate:  # garbage: no line is "Key: Value", so nothing in it is a frame
            return bytes(
                rng.choice(b"abc XYZ\t\x00\x7f\xc3\xa9\xff;=/-.0123456789") for _ in range(rng.randrange(1, 300))
            ), 1
        lines = self._pick()
        if rng.random() < 0.55:
            lines = self._mutate(lines)
        block = b"\r\n".join(lines)
        r = rng.random()
        if r < 0.05 and len(block) > 1:  # cut short, then terminated
            block = block[: rng.randrange(1, len(block))]
        elif r < 0.08 and len(block) > 1:  # cut short and run into the next frame
            nxt = b"\r\n".join(self._pick())
            merged = block[: rng.randrange(1, len(block))] + nxt
            if self._valid(merged):
                return merged, 2
        return block, 1

    # ------------------------------------------------------------------ the stream

    def chunks(self, frames: int, batch: int = 2000) -> Iterator[bytes]:
        """Bytes holding ``frames`` fuzzed frames, cut into chunks of random sizes (as TCP would)."""
        rng = self.rng
        wire = self.wire
        done = 0
        while done < frames:
            parts: list[bytes] = []
            for _ in range(min(batch, frames - done)):
                if rng.random() < 0.002:
                    parts.append(
                        b"Asterisk Call Manager/%d.%d.%d\r\n" % (rng.randrange(30), rng.randrange(9), rng.randrange(9))
                    )
                    wire.banners += 1
                block, count = self._block()
                if not self._valid(block):
                    block, count = b"garbage", 1
                parts.append(block + TERMINATOR)
                wire.blocks += 1
                wire.frames += count
                done += count
            data = b"".join(parts)
            start = 0
            while start < len(data):
                end = start + rng.randrange(1, 1 << 16)
                yield data[start:end]
                start = end
