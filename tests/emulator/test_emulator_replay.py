"""Capture replay: parsing, re-timing and fresh ids (pure), then playing through a real socket."""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from pbx_bridge.emulator import AmiEmulator, play, read_capture, refresh_ids, retime
from pbx_bridge.emulator.replay import UNIQUEID_RE, Capture, parse_capture
from pbx_bridge.errors import CaptureError

from .conftest import TRACES, RawClient

UID_KEYS = re.compile(r"(?i)(uniqueid|linkedid)$")


def uid_fields(headers: dict[str, str]) -> dict[str, str]:
    """Every header that holds a channel uniqueid (not a bridge id)."""
    return {k: v for k, v in headers.items() if UID_KEYS.search(k) and "Bridge" not in k}


def test_capture_drops_banner_login_response_and_auth_events() -> None:
    """Only the PBX's own events remain: no Response, SuccessfulAuth or login FullyBooted."""
    cap = read_capture(TRACES / "a.ami")
    assert cap.banner == "11.0.0"
    assert cap.reconnects == ()
    names = [h["Event"] for _, h in cap.events]
    assert names[0] == "Newchannel"
    assert not {"SuccessfulAuth", "FullyBooted"} & set(names)
    assert all("Response" not in h for _, h in cap.events)
    assert [ts for ts, _ in cap.events] == sorted(ts for ts, _ in cap.events)


def test_restart_capture_marks_the_reconnect() -> None:
    """A second banner mid-stream becomes a reconnect index; the Shutdown event stays."""
    cap = read_capture(TRACES / "restart.ami")
    assert len(cap.reconnects) == 1
    before = [h["Event"] for _, h in cap.events[: cap.reconnects[0]]]
    assert "Shutdown" in before
    assert cap.events[cap.reconnects[0]][1]["Event"] != "FullyBooted"


def test_unreadable_capture_raises_capture_error() -> None:
    """A missing file is a CaptureError naming it."""
    with pytest.raises(CaptureError, match=r"nope\.ami"):
        read_capture(TRACES / "nope.ami")


def test_parse_capture_from_bytes() -> None:
    """Bytes without a banner parse too; events without Timestamp inherit the previous one."""
    data = (
        b"Event: Newchannel\r\nTimestamp: 100.5\r\nUniqueid: 1.1\r\n\r\n"
        b"Event: Custom\r\nFoo: bar\r\n\r\n"
    )
    cap = parse_capture(data)
    assert [ts for ts, _ in cap.events] == [100.5, 100.5]
    assert cap.banner is None


def test_retime_moves_the_first_event_to_start_and_scales_gaps() -> None:
    """Gaps are divided by the speed and the Timestamp header follows."""
    cap = read_capture(TRACES / "c.ami")
    first = cap.events[0][0]
    out = list(retime(cap.events, start=1_000.0, speed=4.0))
    assert out[0][0] == 1_000.0
    for (old, _), (new, headers) in zip(cap.events, out, strict=True):
        assert new == pytest.approx(1_000.0 + (old - first) / 4.0)
        assert float(headers["Timestamp"]) == pytest.approx(new, abs=1e-6)
    assert cap.events[0][1]["Timestamp"] != out[0][1]["Timestamp"]  # input untouched


def test_retime_at_infinite_speed_keeps_order_at_one_instant() -> None:
    """speed=inf puts everything at start."""
    cap = read_capture(TRACES / "d.ami")
    out = list(retime(cap.events, start=5.0, speed=math.inf))
    assert {ts for ts, _ in out} == {5.0}
    assert [h["Event"] for _, h in out] == [h["Event"] for _, h in cap.events]
    with pytest.raises(ValueError, match="speed"):
        list(retime(cap.events, start=5.0, speed=0))


@pytest.mark.parametrize("name", ["k.ami", "blonde_transfer.ami", "ln_e.ami", "mixmonitor.ami"])
def test_fresh_uniqueids_are_consistent_across_every_header(name: str) -> None:
    """Old→new is one bijection over Uniqueid, Linkedid, DestUniqueid, SwapUniqueid, LocalOne…, DestUniqueId."""
    cap = read_capture(TRACES / name)
    timed = list(retime(cap.events, start=2_000_000_000.0, speed=1.0))
    fresh = list(refresh_ids(timed, uid_start=500))
    mapping: dict[str, str] = {}
    keys_seen: set[str] = set()
    for (_, old), (ts, new) in zip(timed, fresh, strict=True):
        assert old.keys() == new.keys()
        for key, value in uid_fields(old).items():
            if not UNIQUEID_RE.match(value):
                continue
            keys_seen.add(key)
            assert UNIQUEID_RE.match(new[key])
            assert mapping.setdefault(value, new[key]) == new[key]
            assert new[key] != value
            assert int(new[key].split(".")[0]) <= int(ts)
    assert len(set(mapping.values())) == len(mapping)
    assert {"Uniqueid", "Linkedid", "DestUniqueid"} <= keys_seen
    if name == "k.ami":
        assert {"SwapUniqueid", "LocalOneUniqueid", "DestUniqueId", "TransfereeLinkedid"} <= keys_seen
    counters = sorted(int(v.split(".")[1]) for v in mapping.values())
    assert counters == list(range(500, 500 + len(mapping)))


def test_uniqueids_inside_dialplan_values_are_rewritten() -> None:
    """MixMonitor file names built from ${UNIQUEID} get the new uniqueid too."""
    cap = read_capture(TRACES / "mixmonitor.ami")
    fresh = list(refresh_ids(retime(cap.events, start=2_000_000_000.0), uid_start=7))
    uid_of: dict[str, str] = {}
    for (_, old), (_, new) in zip(cap.events, fresh, strict=True):
        if "Uniqueid" in old:
            uid_of[old["Uniqueid"]] = new["Uniqueid"]
    files = [(old["Value"], new["Value"]) for (_, old), (_, new) in zip(cap.events, fresh, strict=True)
             if old.get("Variable") == "MIXMONITOR_FILENAME"]
    assert files
    for old_value, new_value in files:
        old_uid = re.search(r"\d{10}\.\d+", old_value)
        assert old_uid is not None
        assert uid_of[old_uid.group(0)] in new_value


def test_channel_names_and_bridges_can_be_renewed() -> None:
    """A channel-counter offset keeps names consistent (Local ;1/;2 pairs too); bridge ids map one to one."""
    cap = read_capture(TRACES / "k.ami")
    fresh = list(refresh_ids(cap.events, channel_offset=0x100, fresh_bridges=True, seed=3))
    names: dict[str, str] = {}
    bridges: dict[str, str] = {}
    for (_, old), (_, new) in zip(cap.events, fresh, strict=True):
        for key, value in old.items():
            if key.endswith("Channel") and value:
                assert names.setdefault(value, new[key]) == new[key]
            if key.endswith("BridgeUniqueid"):
                assert bridges.setdefault(value, new[key]) == new[key]
    assert names["PJSIP/customer-00000005"] == "PJSIP/customer-00000105"
    assert names["Local/1004@agents-00000000;1"] == "Local/1004@agents-00000100;1"
    assert names["Local/1004@agents-00000000;2"] == "Local/1004@agents-00000100;2"
    assert all(old != new for old, new in bridges.items())
    assert len(set(bridges.values())) == len(bridges)


async def test_play_sends_a_capture_with_fresh_ids_at_speed(emu: AmiEmulator, raw: RawClient) -> None:
    """play() emits every event, re-timed from now and sped up, with uniqueids unlike the capture's."""
    cap = read_capture(TRACES / "d.ami")
    span = cap.events[-1][0] - cap.events[0][0]
    await raw.login()
    await raw.frame()
    loop = asyncio.get_running_loop()
    began = loop.time()
    sent = await play(emu, cap, speed=20.0, seed=1)
    took = loop.time() - began
    assert sent == len(cap.events)
    assert took == pytest.approx(span / 20.0, abs=0.15)
    got = [await raw.frame() for _ in range(sent)]
    assert [h["Event"] for h in got] == [h["Event"] for _, h in cap.events]
    stamps = [float(h["Timestamp"]) for h in got if "Timestamp" in h]
    assert stamps == sorted(stamps)
    old_uids = {h["Uniqueid"] for _, h in cap.events if "Uniqueid" in h}
    new_uids = {h["Uniqueid"] for h in got if "Uniqueid" in h}
    assert len(new_uids) == len(old_uids)
    assert not old_uids & new_uids


async def test_play_infinite_speed_and_reconnect_points(emu: AmiEmulator) -> None:
    """At speed=inf everything is sent at once; a capture's reconnect point drops the clients."""
    events = [(float(i), {"Event": "Hold", "Privilege": "call,all", "Timestamp": f"{i}.000000"}) for i in range(5)]
    client = await RawClient.connect(emu.port)
    try:
        await client.login()
        await client.frame()
        sent = await play(emu, Capture(events=events, reconnects=(3,), banner=None), speed=math.inf)
        assert sent == 5
        got = [await client.frame() for _ in range(3)]
        assert [h["Event"] for h in got] == ["Hold"] * 3
        assert await client.next() is None  # dropped at the reconnect point
    finally:
        await client.close()
