"""Topic names, payloads, outage buffers and stopping of the MQTT publisher; the broker rule (no broker needed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pbx_bridge.config import MqttSettings
from pbx_bridge.engine.policy import Policy, PolicySet
from pbx_bridge.errors import ConfigError
from pbx_bridge.hub import Hub
from pbx_bridge.mqtt import MqttPublisher, MqttService, Outbox, tls_context
from pbx_bridge.mqtt.publisher import agent_states, final_violations, masked_record, queue_segment, segment

from .conftest import find_tool


def test_names_become_one_topic_level() -> None:
    """Separators and wildcards in queue and agent names cannot split or widen a topic."""
    assert segment("PJSIP/1001") == "PJSIP_1001"
    assert segment("Local/1001@from-queue/n") == "Local_1001@from-queue_n"
    assert segment("a+b#c") == "a_b_c"
    assert segment("") == "_"
    assert queue_segment("*") == "_all"
    assert queue_segment("support") == "support"


def test_masking_hides_the_customer_not_the_line_or_the_agent() -> None:
    """Inbound: the caller is masked, the dialled line is not; outbound: the callee is masked, the agent is not."""
    inbound = {"direction": "inbound", "caller": "13812345678", "callee": "600"}
    assert masked_record(inbound) == {"direction": "inbound", "caller": "138****5678", "callee": "600"}
    outbound = {"direction": "outbound", "caller": "1004", "callee": "5550115"}
    assert masked_record(outbound) == {"direction": "outbound", "caller": "1004", "callee": "5**0115"}
    internal = {"direction": "internal", "caller": "1001", "callee": "1002"}
    assert masked_record(internal) == internal
    assert inbound["caller"] == "13812345678"  # the engine's record is not changed


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "call_id": "1795451606.32",
        "queue": "support",
        "agent": "PJSIP/1001",
        "arrived_at": "2026-11-23T16:33:26.000Z",
        "offered_at": "2026-11-23T16:33:26.000Z",
        "ended_at": "2026-11-23T16:35:00.000Z",
        "time_to_answer_s": None,
        "abandoned_after_s": None,
        "hold_max_s": 0.0,
        "talk_s": None,
        "violations": [],
    }
    return base | fields


def test_final_violations_carry_value_and_limit_in_seconds() -> None:
    """Each rule id of a record becomes one final violation, measured against its queue's policy."""
    policies = PolicySet(queues={"vip": Policy(hold_limit_s=30.0, rings_limit=2)})
    held = record(violations=["hold.too_long", "hangup.agent_first"], hold_max_s=70.004, time_to_answer_s=4.0)
    (hold, hangup) = final_violations(held, policies)
    assert hold == {
        "rule": "hold.too_long",
        "call_id": "1795451606.32",
        "agent": "PJSIP/1001",
        "queue": "support",
        "value": 70.0,
        "limit": 60.0,
        "live": False,
        "ts": pytest.approx(1795451700.0),
    }
    assert (hangup["value"], hangup["limit"]) == (None, None)
    slow = record(queue="vip", violations=["answer.within_rings", "answer.five_rings"], time_to_answer_s=13.26)
    assert [(v["value"], v["limit"]) for v in final_violations(slow, policies)] == [(13.3, 6.0), (13.3, 12.0)]
    gone = record(violations=["answer.five_rings", "call.unanswered"], abandoned_after_s=20.04)
    assert [(v["value"], v["limit"]) for v in final_violations(gone, policies)] == [(20.0, 12.0), (20.0, None)]
    dropped = record(violations=["call.unanswered"])  # dropped by the PBX: the wait is offered → ended
    assert final_violations(dropped, policies)[0]["value"] == 94.0
    long = record(violations=["duration.over_max"], talk_s=330.5)
    assert [(v["value"], v["limit"]) for v in final_violations(long, policies)] == [(330.5, 300.0)]


def test_an_agent_in_two_queues_has_one_state_topic() -> None:
    """The per-queue entries are grouped; the top-level state is the busiest of them."""
    entries: list[dict[str, Any]] = [
        {"agent": "PJSIP/1002", "name": "Li", "queue": "sales", "state": "paused", "reason": "lunch", "since": 5.0},
        {"agent": "PJSIP/1002", "name": "Li", "queue": "support", "state": "available", "reason": None, "since": 3.0},
        {"agent": "PJSIP/1003", "name": "Wu", "queue": "support", "state": "logged_out", "reason": None, "since": 1.0},
    ]
    states = agent_states(entries)
    assert states["PJSIP/1002"] == {
        "agent": "PJSIP/1002",
        "name": "Li",
        "state": "available",
        "reason": None,
        "since": 3.0,
        "queues": {
            "sales": {"state": "paused", "reason": "lunch", "since": 5.0},
            "support": {"state": "available", "reason": None, "since": 3.0},
        },
    }
    assert states["PJSIP/1003"]["state"] == "logged_out"


def test_outbox_drops_oldest_events_but_keeps_records_apart() -> None:
    """A full event buffer drops its oldest events (counted); records have their own buffer and order is kept."""
    box = Outbox(event_limit=3, record_limit=2)
    assert box.put("e1", b"", durable=False)
    assert box.put("r1", b"", durable=True)
    for name in ("e2", "e3", "e4", "e5"):
        box.put(name, b"", durable=False)
    assert (box.dropped_events, box.dropped_records) == (2, 0)
    assert [m.topic for m in box.take(2)] == ["r1", "e3"]
    assert box.put("r2", b"", durable=True)
    assert box.put("r3", b"", durable=True)
    assert not box.put("r4", b"", durable=True)
    assert box.dropped_records == 1
    taken = box.take(10)
    assert [m.topic for m in taken] == ["e4", "e5", "r3", "r4"]
    box.give_back(taken[1:3])  # not acknowledged: back at the front, in order
    box.put("e6", b"", durable=False)
    assert [m.topic for m in box.take(10)] == ["e5", "r3", "e6"]
    assert len(box) == 0


def test_bad_tls_or_url_settings_fail_at_start_up(tmp_path: Path) -> None:
    """A missing CA file or a URL without host is a ConfigError naming the key, before the daemon runs."""
    missing = MqttSettings(enabled=True, url="mqtts://broker:8883", ca_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        MqttService(missing)
    with pytest.raises(ConfigError, match=r"mqtt\.url"):
        MqttService(MqttSettings(enabled=True, url="broker:1883"))
    assert tls_context(MqttSettings(url="mqtt://broker")) is None
    assert tls_context(MqttSettings(url="mqtts://broker")) is not None


async def test_service_reports_disconnected_before_it_runs() -> None:
    """The gauge reads 0 (not "unknown") when MQTT is configured but not connected yet."""
    service = MqttService(MqttSettings(enabled=True, url="mqtt://127.0.0.1:1"))
    assert service.connected() is False


async def test_a_stop_during_the_handshake_ends_promptly_and_quietly() -> None:
    """Cancelled while a silent broker never answers CONNACK, the publisher stops within its deadline, no errors."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    peers: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        accepted.set()
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    view = SimpleNamespace(hub=Hub(), snapshot=lambda: {"queues": [], "agents": []})
    publisher = MqttPublisher(MqttSettings(enabled=True, url=f"mqtt://127.0.0.1:{port}"), view, shutdown_timeout_s=0.3)
    task = asyncio.create_task(publisher.run())
    await accepted.wait()
    await asyncio.sleep(0.1)  # CONNECT sent, waiting for a CONNACK that never comes
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2.0
    assert not publisher.connected
    for writer in peers:
        writer.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.1)  # paho sees the close: no callback may trip over a cancelled future
    assert errors == []


def test_a_missing_broker_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mosquitto a developer gets a skip with the install hint; CI (CI=true) gets a failure."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y mosquitto"):
        find_tool("pbx-bridge-no-such-broker", "mosquitto")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="pbx-bridge-no-such-broker not found"):
        find_tool("pbx-bridge-no-such-broker", "mosquitto")
