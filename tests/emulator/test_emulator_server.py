"""AmiEmulator through a real socket: raw AMI bytes and panoramisk's Manager."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from panoramisk import Manager

from pbx_bridge.ami.frames import Banner
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.emulator.pbx_state import format_duration

from .conftest import SECRET, RawClient

STAMP = re.compile(r"^\d{10}\.\d{6}$")


def channel(name: str, uid: str, linkedid: str | None = None, state: str = "4") -> dict[str, str]:
    """A Newchannel-like snapshot (Timestamp left for the emulator to add)."""
    return {
        "Privilege": "call,all",
        "Channel": name,
        "ChannelState": state,
        "ChannelStateDesc": "Ring",
        "CallerIDNum": "5550101",
        "CallerIDName": "Customer 101",
        "ConnectedLineNum": "<unknown>",
        "ConnectedLineName": "<unknown>",
        "Language": "en",
        "AccountCode": "",
        "Context": "from-customer",
        "Exten": "600",
        "Priority": "1",
        "Uniqueid": uid,
        "Linkedid": linkedid or uid,
    }


def event(name: str, **fields: str) -> dict[str, str]:
    return {"Event": name, **fields}


@pytest.fixture
async def manager_factory(emu: AmiEmulator) -> AsyncIterator[Callable[..., Manager]]:
    managers: list[Manager] = []

    def make(secret: str = SECRET, **config: Any) -> Manager:
        settings: dict[str, Any] = {"ping_delay": 3600, "reconnect_timeout": 0} | config
        mgr = Manager(
            host="127.0.0.1",
            port=emu.port,
            username="bridge",
            secret=secret,
            loop=asyncio.get_running_loop(),
            **settings,
        )
        managers.append(mgr)
        return mgr

    yield make
    for mgr in managers:
        mgr.close()


async def connect(mgr: Manager) -> None:
    await mgr.connect()
    assert await asyncio.wait_for(mgr.authenticated_future, 2)


async def test_banner_then_login_accepted_then_fully_booted(raw: RawClient) -> None:
    """A client gets the 11.0.0 banner, a Success with its ActionID, then FullyBooted without Timestamp."""
    resp = await raw.login()
    assert resp == {"Response": "Success", "ActionID": "login-1", "Message": "Authentication accepted"}
    booted = await raw.frame()
    assert booted["Event"] == "FullyBooted"
    assert "Timestamp" not in booted
    assert raw.parser.stats.banners == 1


async def test_banner_bytes_are_exact(emu: AmiEmulator) -> None:
    """The greeting is exactly ``Asterisk Call Manager/11.0.0\\r\\n``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        line = await asyncio.wait_for(reader.readline(), 2)
        assert line == b"Asterisk Call Manager/11.0.0\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_bad_secret_is_refused_and_the_connection_closed(raw: RawClient, emu: AmiEmulator) -> None:
    """A wrong secret gets ``Authentication failed`` and the socket is closed, as Asterisk does."""
    resp = await raw.login(secret="wrong")
    assert resp == {"Response": "Error", "ActionID": "login-1", "Message": "Authentication failed"}
    assert await raw.next() is None
    assert emu.stats.failed_logins == 1
    assert emu.logged_in_clients == 0


async def test_panoramisk_login_fails_with_bad_secret(manager_factory: Callable[..., Manager]) -> None:
    """panoramisk sees a non-success login response."""
    mgr = manager_factory(secret="wrong", reconnect_timeout=60)
    await mgr.connect()
    resp = await asyncio.wait_for(mgr.authenticated_future, 2)
    assert not resp.success
    assert resp.message == "Authentication failed"


async def test_actions_before_login_are_denied(raw: RawClient) -> None:
    """Anything but Login before authentication gets ``Permission denied``."""
    assert isinstance(await raw.next(), Banner)
    raw.send(Action="Ping", ActionID="p1")
    assert await raw.frame() == {"Response": "Error", "ActionID": "p1", "Message": "Permission denied"}


async def test_ping_and_unknown_action_echo_the_action_id(raw: RawClient) -> None:
    """Ping answers Pong with a Timestamp; an unknown action is an error; both carry the ActionID."""
    await raw.login()
    await raw.frame()  # FullyBooted
    raw.send(action="ping", actionid="x-7")  # header names are case-insensitive
    pong = await raw.frame()
    assert pong["Response"] == "Success"
    assert pong["ActionID"] == "x-7"
    assert pong["Ping"] == "Pong"
    assert STAMP.match(pong["Timestamp"])
    raw.send(Action="Frobnicate", ActionID="x-8")
    err = await raw.frame()
    assert err["Response"] == "Error"
    assert err["ActionID"] == "x-8"
    assert err["Message"].startswith("Invalid/unknown command: Frobnicate")


async def test_logoff_says_goodbye_and_closes(raw: RawClient) -> None:
    """Logoff gets ``Response: Goodbye`` and then EOF."""
    await raw.login()
    await raw.frame()
    raw.send(Action="Logoff", ActionID="bye")
    resp = await raw.frame()
    assert resp["Response"] == "Goodbye"
    assert resp["ActionID"] == "bye"
    assert await raw.next() is None


async def test_panoramisk_ping(manager_factory: Callable[..., Manager]) -> None:
    """panoramisk logs in and gets Pong back for its Ping."""
    mgr = manager_factory()
    await connect(mgr)
    resp = await asyncio.wait_for(mgr.send_action({"Action": "Ping"}), 2)
    assert resp.success
    assert resp.ping == "Pong"


async def test_core_show_channels_reflects_emitted_events(
    emu: AmiEmulator, manager_factory: Callable[..., Manager]
) -> None:
    """CoreShowChannels lists channels from Newchannel, updated by Newstate/BridgeEnter, minus Hangup."""
    mgr = manager_factory()
    await connect(mgr)
    await emu.emit(event("Newchannel", **channel("PJSIP/customer-00000010", "1795451356.20")))
    await emu.emit(
        event("Newchannel", **channel("PJSIP/1003-00000011", "1795451356.21", "1795451356.20", state="0"))
    )
    up = channel("PJSIP/customer-00000010", "1795451356.20", state="6") | {"ChannelStateDesc": "Up"}
    await emu.emit(event("Newstate", **up))
    await emu.emit(
        event("Newexten", **up, Extension="600", Application="Queue", AppData="support,t")
    )
    await emu.emit(event("BridgeEnter", BridgeUniqueid="c0953deb-0d31-410d-945c-e8c8100f1ea6", **up))
    await emu.emit(event("Hangup", **channel("PJSIP/1003-00000011", "1795451356.21"), Cause="16"))

    resp = await asyncio.wait_for(mgr.send_action({"Action": "CoreShowChannels", "ActionID": "csc-1"}), 2)
    assert [m.event or m.response for m in resp] == ["Success", "CoreShowChannel", "CoreShowChannelsComplete"]
    assert all(m["ActionID"] == "csc-1" for m in resp)
    assert resp[0]["EventList"] == "start"
    assert resp[0]["Message"] == "Channels will follow"
    chan = resp[1]
    assert chan["Channel"] == "PJSIP/customer-00000010"
    assert chan["Uniqueid"] == "1795451356.20"
    assert chan["ChannelStateDesc"] == "Up"
    assert chan["BridgeId"] == "c0953deb-0d31-410d-945c-e8c8100f1ea6"
    assert chan["Application"] == "Queue"
    assert chan["ApplicationData"] == "support,t"
    assert re.match(r"^\d\d:\d\d:\d\d$", chan["Duration"])
    assert resp[2]["EventList"] == "Complete"
    assert resp[2]["ListItems"] == "1"


def test_duration_format() -> None:
    """Duration is HH:MM:SS with whole seconds."""
    assert format_duration(3725.9) == "01:02:05"
    assert format_duration(-3) == "00:00:00"


async def test_events_reach_the_client_in_order_with_timestamp(
    emu: AmiEmulator, manager_factory: Callable[..., Manager]
) -> None:
    """Emitted events arrive in order, each stamped right after Privilege; stamps already present are kept."""
    mgr = manager_factory()
    got: list[dict[str, str]] = []
    done = asyncio.Event()

    def on_event(_: Manager, msg: Any) -> None:
        if msg.event == "VarSet":
            got.append(dict(msg))
            if len(got) == 60:
                done.set()

    mgr.register_event("VarSet", on_event)
    await connect(mgr)
    for i in range(59):
        await emu.emit({"Event": "VarSet", "Privilege": "dialplan,all", "Variable": "N", "Value": str(i)})
    await emu.emit({"Event": "VarSet", "Privilege": "dialplan,all", "Timestamp": "1700000000.000001",
                    "Variable": "N", "Value": "59"})
    await asyncio.wait_for(done.wait(), 3)
    assert [int(m["Value"]) for m in got] == list(range(60))
    assert all(STAMP.match(m["Timestamp"]) for m in got)
    assert got[-1]["Timestamp"] == "1700000000.000001"


async def test_wire_order_puts_timestamp_after_privilege(emu: AmiEmulator, raw: RawClient) -> None:
    """On the wire the added Timestamp sits where Asterisk writes it."""
    await raw.login()
    await raw.frame()
    await emu.emit({"Event": "Hold", "Privilege": "call,all", "Channel": "PJSIP/1003-00000011"})
    assert list(await raw.frame()) == ["Event", "Privilege", "Timestamp", "Channel"]


async def test_events_only_go_to_logged_in_clients(emu: AmiEmulator, raw: RawClient) -> None:
    """A connected but unauthenticated client receives no events."""
    assert isinstance(await raw.next(), Banner)
    await emu.emit({"Event": "Hold", "Privilege": "call,all"})
    with pytest.raises(TimeoutError):
        await raw.next(timeout=0.2)


async def test_drop_clients_makes_panoramisk_reconnect(
    emu: AmiEmulator, manager_factory: Callable[..., Manager]
) -> None:
    """After an abrupt close panoramisk reconnects, logs in again and events flow again."""
    mgr = manager_factory()
    seen = asyncio.Event()
    mgr.register_event("Hold", lambda *_: seen.set())
    await connect(mgr)
    emu.drop_clients()
    assert emu.logged_in_clients == 0
    await emu.wait_logged_in(1, timeout=5)
    assert emu.stats.logins == 2
    await emu.emit({"Event": "Hold", "Privilege": "call,all"})
    await asyncio.wait_for(seen.wait(), 3)


async def test_silent_peer_answers_nothing_until_revived(
    emu: AmiEmulator, manager_factory: Callable[..., Manager]
) -> None:
    """A silent emulator keeps the socket open but answers no action and sends no event."""
    mgr = manager_factory()
    seen: list[str] = []
    mgr.register_event("Hold", lambda _m, msg: seen.append(msg.event))
    await connect(mgr)
    emu.set_silent(True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(mgr.send_action({"Action": "Ping"}), 0.3)
    await emu.emit({"Event": "Hold", "Privilege": "call,all", "Channel": "x"})
    await asyncio.sleep(0.1)
    assert seen == []
    assert emu.clients == 1
    emu.set_silent(False)
    resp = await asyncio.wait_for(mgr.send_action({"Action": "Ping"}), 2)
    assert resp.ping == "Pong"


async def test_slow_client_is_dropped_and_others_keep_up(emu: AmiEmulator) -> None:
    """A client that stops reading is disconnected (writetimeout); a reading client gets every event."""
    emu.max_backlog_bytes = 256 * 1024
    emu.write_timeout = 0.5
    slow = await RawClient.connect(emu.port)
    fast = await RawClient.connect(emu.port)
    try:
        await slow.login()
        await fast.login()
        await fast.frame()  # FullyBooted
        received = 0

        async def read_all() -> None:
            nonlocal received
            while received < 3000:
                frame = await fast.frame(timeout=5)
                if frame.get("Event") == "VarSet":
                    received += 1

        reader = asyncio.create_task(read_all())
        blob = "x" * 8000
        for i in range(3000):
            await emu.emit({"Event": "VarSet", "Privilege": "dialplan,all", "Variable": str(i), "Value": blob})
            if i % 10 == 0:
                await asyncio.sleep(0)  # let the reader run, as a live event source would
        await asyncio.wait_for(reader, 10)
        assert received == 3000
        assert emu.stats.slow_clients_dropped == 1
        assert emu.clients == 1
    finally:
        await slow.close()
        await fast.close()


async def test_restart_sends_shutdown_clears_state_and_refuses_during_downtime(
    emu: AmiEmulator, raw: RawClient
) -> None:
    """A restart says Shutdown (Restart: True), closes the session, forgets channels, refuses for a while."""
    await raw.login()
    await raw.frame()
    await emu.emit(event("Newchannel", **channel("PJSIP/customer-00000001", "1795451356.20")))
    await raw.frame()
    first = emu.new_uniqueid()
    restart = asyncio.create_task(emu.restart(downtime=0.3))
    shutdown = await raw.frame()
    assert (shutdown["Event"], shutdown["Shutdown"], shutdown["Restart"]) == ("Shutdown", "Cleanly", "True")
    assert await raw.next() is None
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", emu.port)
    await restart
    assert emu.state.channels == {}
    assert emu.new_uniqueid().endswith(".0")
    assert first.endswith(".0")
    again = await RawClient.connect(emu.port)
    try:
        await again.login()
        booted = await again.frame()
        assert booted["Uptime"] == "0"
        again.send(Action="CoreShowChannels", ActionID="c")
        frames = [await again.frame(), await again.frame()]
        assert frames[1]["Event"] == "CoreShowChannelsComplete"
        assert frames[1]["ListItems"] == "0"
    finally:
        await again.close()


async def test_queue_status_and_summary_follow_queue_events(
    emu: AmiEmulator, manager_factory: Callable[..., Manager]
) -> None:
    """QueueStatus lists params, members and waiting callers; QueueSummary counts them."""
    mgr = manager_factory()
    await connect(mgr)
    member = {
        "Privilege": "agent,all", "Queue": "support", "MemberName": "agent1001", "Interface": "PJSIP/1001",
        "StateInterface": "PJSIP/1001", "Membership": "dynamic", "Penalty": "0", "CallsTaken": "0",
        "LastCall": "0", "LastPause": "0", "LoginTime": "1795454244", "InCall": "0", "Status": "1",
        "Paused": "0", "PausedReason": "", "Ringinuse": "0", "Wrapuptime": "0",
    }
    await emu.emit(event("QueueMemberAdded", **member))
    await emu.emit(event("QueueMemberAdded", **(member | {"MemberName": "agent1002", "Interface": "PJSIP/1002",
                                                           "StateInterface": "PJSIP/1002"})))
    await emu.emit(event("QueueMemberPause", **(member | {"Paused": "1", "PausedReason": "lunch"})))
    caller = channel("PJSIP/customer-00000010", "1795451356.20")
    await emu.emit(event("Newchannel", **caller))
    await emu.emit(event("QueueCallerJoin", **caller, Queue="support", Position="1", Count="1"))

    resp = await asyncio.wait_for(mgr.send_action({"Action": "QueueStatus", "ActionID": "qs"}), 2)
    kinds = [m.event or m.response for m in resp]
    assert kinds == ["Success", "QueueParams", "QueueMember", "QueueMember", "QueueEntry", "QueueStatusComplete"]
    assert all(m["ActionID"] == "qs" for m in resp)
    assert resp[1]["Calls"] == "1"
    assert resp[2]["Paused"] == "1"
    assert resp[2]["PausedReason"] == "lunch"
    assert resp[4]["Uniqueid"] == "1795451356.20"
    assert resp[4]["Position"] == "1"
    assert resp[5]["ListItems"] == "4"

    summary = await asyncio.wait_for(mgr.send_action({"Action": "QueueSummary", "ActionID": "sum"}), 2)
    assert [m.event or m.response for m in summary] == ["Success", "QueueSummary", "QueueSummaryComplete"]
    assert (summary[1]["LoggedIn"], summary[1]["Available"], summary[1]["Callers"]) == ("2", "1", "1")

    await emu.emit(event("QueueCallerLeave", **caller, Queue="support", Position="1", Count="0"))
    await emu.emit(event("QueueMemberRemoved", **member))
    resp = await asyncio.wait_for(mgr.send_action({"Action": "QueueStatus"}), 2)
    assert [m.event or m.response for m in resp] == ["Success", "QueueParams", "QueueMember", "QueueStatusComplete"]
