"""The AMI frame parser: same frames however the bytes are split, bounded memory, nothing lost silently."""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx_bridge.ami.frames import TERMINATOR, Banner, Frame, FrameParser, ParserStats, encode_frame

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
CAPTURES = sorted(p.stem for p in TRACES.glob("*.ami"))

Items = list[Frame | Banner]


def counters(stats: ParserStats) -> tuple[int, ...]:
    """Every counter but ``bytes_in`` (which is the same by construction)."""
    return (stats.frames, stats.banners, stats.garbage, stats.oversize, stats.decode_errors, stats.malformed_lines)


@cache
def capture(name: str) -> bytes:
    return (TRACES / f"{name}.ami").read_bytes()


@cache
def parsed_whole(name: str) -> tuple[tuple[Frame | Banner, ...], tuple[int, ...]]:
    parser = FrameParser()
    items = parser.feed(capture(name))
    return tuple(items), counters(parser.stats)


def feed_chunks(parser: FrameParser, chunks: list[bytes]) -> Items:
    out: Items = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def frames_of(items: Items) -> list[dict[str, str]]:
    return [item.headers for item in items if isinstance(item, Frame)]


# ---------------------------------------------------------------------------------------------
# Real captures, split every way


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_parses_cleanly_whole(name: str) -> None:
    """A real capture parses into a banner, responses and events, with no byte unaccounted for."""
    items, (frames, banners, garbage, oversize, decode_errors, _) = parsed_whole(name)
    assert isinstance(items[0], Banner)
    assert banners >= 1
    assert frames == len(items) - banners > 10
    assert (garbage, oversize, decode_errors) == (0, 0, 0)
    assert sum(1 for i in items if isinstance(i, Frame) and i.event) == capture(name).count(b"\r\nEvent: ") + (
        1 if capture(name).startswith(b"Event: ") else 0
    )


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_fed_one_byte_at_a_time(name: str) -> None:
    """Fed one byte per read, a capture yields exactly the frames and counts of feeding it whole."""
    data = capture(name)
    parser = FrameParser()
    feed = parser.feed
    out: Items = []
    for i in range(len(data)):
        out.extend(feed(data[i : i + 1]))
    want_items, want_counts = parsed_whole(name)
    assert out == list(want_items)
    assert counters(parser.stats) == want_counts
    assert parser.stats.bytes_in == len(data)
    assert parser.pending_bytes == 0


@pytest.mark.parametrize("name", CAPTURES)
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=2**32), max_size=80))
def test_capture_split_at_random_points(name: str, cuts: list[int]) -> None:
    """Split at random points, a capture yields exactly the frames and counts of feeding it whole."""
    parser = FrameParser()
    out = feed_chunks(parser, split_at(capture(name), cuts))
    want_items, want_counts = parsed_whole(name)
    assert out == list(want_items)
    assert counters(parser.stats) == want_counts


def test_restart_capture_has_a_second_banner_mid_stream() -> None:
    """The restart capture yields two banners: at the start and after the PBX came back, between frames."""
    items, _ = parsed_whole("restart")
    positions = [i for i, item in enumerate(items) if isinstance(item, Banner)]
    assert len(positions) == 2
    assert positions[0] == 0
    assert 0 < positions[1] < len(items) - 1
    assert {items[p] for p in positions} == {Banner("11.0.0")}
    before, after = items[positions[1] - 1], items[positions[1] + 1]
    assert isinstance(before, Frame) and before.event == "Shutdown"
    assert isinstance(after, Frame) and after.response == "Success"


# ---------------------------------------------------------------------------------------------
# UTF-8


def test_chinese_name_split_inside_a_character_stays_whole() -> None:
    """A three-byte character cut between two reads at either inner byte is decoded whole."""
    frame = encode_frame({"Event": "Newchannel", "CallerIDName": "张伟", "Exten": "610"})
    start = frame.index("张".encode())
    for cut in (start + 1, start + 2, start + 4, start + 5):
        parser = FrameParser()
        out = feed_chunks(parser, [frame[:cut], frame[cut:]])
        assert frames_of(out) == [{"Event": "Newchannel", "CallerIDName": "张伟", "Exten": "610"}]
        assert parser.stats.decode_errors == 0


def test_chinese_names_of_the_utf8_capture_survive_every_cut() -> None:
    """Cutting the utf8_names capture inside each Chinese name keeps every name intact."""
    data = capture("utf8_names")
    for name in ("张伟", "王芳", "李娜"):
        encoded = name.encode()
        at = data.index(encoded)
        for cut in range(at + 1, at + len(encoded)):
            parser = FrameParser()
            out = feed_chunks(parser, [data[:cut], data[cut:]])
            assert out == list(parsed_whole("utf8_names")[0])
            assert any(name in h.get("CallerIDName", "") for h in frames_of(out))
            assert parser.stats.decode_errors == 0


def test_invalid_utf8_becomes_replacement_characters_and_is_counted() -> None:
    """Bytes that are not UTF-8 become U+FFFD in a frame that is still delivered, and are counted."""
    parser = FrameParser()
    out = parser.feed(b"Event: Newchannel\r\nCallerIDName: \xff\xfeBob\r\nExten: 600\r\n\r\n")
    assert frames_of(out) == [{"Event": "Newchannel", "CallerIDName": "\ufffd\ufffdBob", "Exten": "600"}]
    assert parser.stats.decode_errors >= 1
    assert parser.stats.errors >= 1


def test_a_genuine_replacement_character_is_not_a_decode_error() -> None:
    """A correctly encoded U+FFFD sent by the PBX is data, not a decode error."""
    parser = FrameParser()
    out = parser.feed(encode_frame({"Event": "Newchannel", "CallerIDName": "A\ufffdB"}))
    assert frames_of(out) == [{"Event": "Newchannel", "CallerIDName": "A\ufffdB"}]
    assert parser.stats.decode_errors == 0


def test_invalid_utf8_is_counted_even_next_to_a_genuine_replacement_character() -> None:
    """Invalid bytes are counted even when the same frame also carries a correctly encoded U+FFFD."""
    parser = FrameParser()
    block = "Event: Newchannel\r\nCallerIDName: 张\ufffd\r\nExten: ".encode() + b"\xff6\r\n\r\n"
    out = parser.feed(block)
    assert frames_of(out) == [{"Event": "Newchannel", "CallerIDName": "张\ufffd", "Exten": "\ufffd6"}]
    assert parser.stats.decode_errors >= 1, "an invalid byte became U+FFFD without being counted"


# ---------------------------------------------------------------------------------------------
# Oversize messages and garbage

LIMIT = 1024
# What the parser may hold while waiting: a message of the limit plus a partial terminator.
BOUND = LIMIT + len(TERMINATOR) - 1
AFTER = [{"Event": "Hangup", "Uniqueid": "1.1"}, {"Event": "Newchannel", "Uniqueid": "1.2"}]


def tail() -> bytes:
    return b"".join(encode_frame(h) for h in AFTER)


def test_oversize_message_with_terminator_is_skipped_and_counted() -> None:
    """A message bigger than the limit is skipped and counted; the frames after it parse."""
    big = encode_frame({"Event": "VarSet", "Value": "x" * (4 * LIMIT)})
    parser = FrameParser(max_frame_bytes=LIMIT)
    out = parser.feed(big + tail())
    assert frames_of(out) == AFTER
    assert parser.stats.oversize == 1
    assert parser.pending_bytes == 0


def test_oversize_message_arriving_in_small_reads_keeps_memory_bounded() -> None:
    """Read in small pieces, an oversize message never makes the parser hold more than the limit."""
    big = encode_frame({"Event": "VarSet", "Value": "x" * (4 * LIMIT)})
    parser = FrameParser(max_frame_bytes=LIMIT)
    out: Items = []
    for chunk in split_at(big + tail(), list(range(0, len(big) + 200, 61))):
        out.extend(parser.feed(chunk))
        assert parser.pending_bytes <= BOUND
    assert frames_of(out) == AFTER
    assert parser.stats.oversize == 1


def test_endless_message_without_terminator_keeps_memory_bounded() -> None:
    """A peer that never ends its message cannot grow the buffer; it is counted once, and parsing resumes."""
    parser = FrameParser(max_frame_bytes=LIMIT)
    assert parser.feed(b"Event: Flood\r\nData: ") == []
    for _ in range(300):
        assert parser.feed(b"y" * 997) == []
        assert parser.pending_bytes <= BOUND
    assert parser.stats.oversize == 1
    out = parser.feed(b"\r\n\r\n" + tail())
    assert frames_of(out) == AFTER
    assert parser.stats.oversize == 1
    assert parser.stats.bytes_in > 100 * LIMIT


def test_oversize_frame_in_a_capture_does_not_disturb_its_neighbours() -> None:
    """An oversize event injected into a real capture is dropped alone; every real frame still parses."""
    data = capture("d")
    cut = data.index(b"\r\n\r\nEvent: ", len(data) // 2) + 4
    big = encode_frame({"Event": "VarSet", "Value": "z" * (2 * LIMIT)})
    whole_items, _ = parsed_whole("d")
    longest = max(len(encode_frame(i.headers)) for i in whole_items if isinstance(i, Frame))
    parser = FrameParser(max_frame_bytes=max(LIMIT, longest))
    out = feed_chunks(parser, split_at(data[:cut] + big + data[cut:], list(range(0, len(data), 500))))
    assert out == list(whole_items)
    assert parser.stats.oversize == 1


def test_frame_at_the_limit_is_kept_however_its_terminator_is_split() -> None:
    """A message of exactly max_frame_bytes is accepted, even when a read ends inside its terminator."""
    head = "Event: VarSet\r\nValue: "
    frame = encode_frame({"Event": "VarSet", "Value": "v" * (LIMIT - len(head))})
    assert len(frame) - 4 == LIMIT  # the message without its terminating CRLF CRLF
    for cut in range(len(frame) - 4, len(frame) + 1):
        parser = FrameParser(max_frame_bytes=LIMIT)
        out = feed_chunks(parser, [frame[:cut], frame[cut:] + tail()])
        assert [h["Event"] for h in frames_of(out)] == ["VarSet", "Hangup", "Newchannel"], f"read split at {cut}"
        assert parser.stats.oversize == 0


def test_one_byte_over_the_limit_is_oversize() -> None:
    """A message one byte longer than max_frame_bytes is skipped and counted."""
    head = "Event: VarSet\r\nValue: "
    frame = encode_frame({"Event": "VarSet", "Value": "v" * (LIMIT - len(head) + 1)})
    parser = FrameParser(max_frame_bytes=LIMIT)
    assert frames_of(parser.feed(frame + tail())) == AFTER
    assert parser.stats.oversize == 1


def test_garbage_blocks_are_counted_and_skipped() -> None:
    """Blocks that are neither event, response nor banner are counted as garbage; frames around them parse."""
    stream = (
        encode_frame(AFTER[0])
        + b"hello there\r\nthis is not AMI\r\n\r\n"
        + b"Foo: bar\r\n\r\n"
        + encode_frame(AFTER[1])
    )
    parser = FrameParser()
    out = parser.feed(stream)
    assert frames_of(out) == AFTER
    assert parser.stats.garbage == 2
    assert parser.stats.malformed_lines == 2
    assert parser.stats.errors == 2


def test_blank_lines_between_frames_are_not_garbage() -> None:
    """Extra blank lines between messages produce no frame and no error."""
    parser = FrameParser()
    out = parser.feed(encode_frame(AFTER[0]) + b"\r\n\r\n\r\n" + encode_frame(AFTER[1]))
    assert frames_of(out) == AFTER
    assert parser.stats.errors == 0


# ---------------------------------------------------------------------------------------------
# Header edge cases


def test_duplicate_headers_keep_a_stable_type() -> None:
    """A repeated header never turns into a list: the first value keeps the key, later ones get aliases."""
    parser = FrameParser()
    once = parser.feed(b"Event: Newchannel\r\nChanVariable: FOO=1\r\n\r\n")
    twice = parser.feed(
        b"Event: Newchannel\r\nChanVariable: FOO=1\r\nChanVariable: BAR=2\r\nNote: a\r\nNote: b\r\n\r\n"
    )
    (one,) = frames_of(once)
    (two,) = frames_of(twice)
    assert one["ChanVariable"] == two["ChanVariable"] == "FOO=1"
    assert two["ChanVariable(BAR)"] == "2"
    assert two["Note"] == "a"
    assert [v for k, v in two.items() if k.startswith("Note") and k != "Note"] == ["b"]
    assert all(isinstance(v, str) for v in (*one.values(), *two.values()))


@pytest.mark.parametrize("last", [b"AccountCode: ", b"AccountCode:"])
def test_empty_last_header_value_survives(last: bytes) -> None:
    """An empty value on the last line of a message is kept as an empty string, whole or byte by byte."""
    message = b"Event: Newchannel\r\nUniqueid: 1.1\r\n" + last + b"\r\n\r\n"
    whole = frames_of(FrameParser().feed(message))
    parser = FrameParser()
    bytewise = frames_of(feed_chunks(parser, [message[i : i + 1] for i in range(len(message))]))
    assert whole == bytewise == [{"Event": "Newchannel", "Uniqueid": "1.1", "AccountCode": ""}]


header_names = st.text(
    alphabet=st.characters(categories=["Lu", "Ll", "Nd"], max_codepoint=127), min_size=1, max_size=12
)
header_values = st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None, database=None)
@given(
    headers=st.dictionaries(header_names.filter(lambda k: k != "Event"), header_values, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_encode_then_parse_round_trips(headers: dict[str, str], cuts: list[int]) -> None:
    """Any event the encoder writes (any Unicode value) parses back to the same headers, however split."""
    message = {"Event": "UserEvent", **headers}
    parser = FrameParser()
    out = feed_chunks(parser, split_at(encode_frame(message), cuts))
    assert frames_of(out) == [message]
    assert parser.stats.errors == 0
