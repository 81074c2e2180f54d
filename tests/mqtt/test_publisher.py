"""The MQTT publisher against a real mosquitto, fed by real captures through the real engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pbx_bridge.board import mask_number
from pbx_bridge.daemon import live_message
from pbx_bridge.engine.model import CallRecord, Direction, LiveViolation
from pbx_bridge.mqtt import MqttPublisher, tls_context

from .conftest import Broker, find_tool
from .harness import ROOT, ReplayView, Subscriber, make_publisher, mqtt_settings, running, wait_until

pytestmark = pytest.mark.needs_mosquitto

# Answered, agent-first, abandons, a 70 s hold, blind and attended transfers, a direct call, an
# outbound callback, Chinese names, and agents logging in and pausing across two queues.
CAPTURES = ("a", "b", "c", "d", "g", "i", "k", "n", "o", "utf8_names", "agent_states")
STATE_RANK = ("on_call", "ringing", "available", "paused", "logged_out")


def expected_record(r: CallRecord, masked: bool) -> dict[str, Any]:
    """The record contract, with the customer's number masked when configured."""
    d = r.to_dict()
    if masked and r.direction is Direction.INBOUND:
        d["caller"] = mask_number(r.caller)
    if masked and r.direction is Direction.OUTBOUND:
        d["callee"] = mask_number(r.callee)
    return d


def records_received(sub: Subscriber) -> dict[str, dict[str, Any]]:
    got = [json.loads(m.payload) for m in sub.matching(lambda t: t.endswith("/record"))]
    return {d["call_id"]: d for d in got}


def latest_state(sub: Subscriber) -> dict[str, Any]:
    """Each state topic's last payload (an empty payload deletes the retained state)."""
    out: dict[str, Any] = {}
    for m in sub.matching(lambda t: t.endswith("/state")):
        if m.payload:
            out[m.topic] = json.loads(m.payload)
        else:
            out.pop(m.topic, None)
    return out


def expected_state(view: ReplayView) -> dict[str, Any]:
    """The retained queue and agent topics the wallboard snapshot calls for."""
    snap = view.snapshot()
    out: dict[str, Any] = {}
    for q in snap["queues"]:
        out[f"{ROOT}/queue/{'_all' if q['queue'] == '*' else q['queue']}/state"] = q
    for a in snap["agents"]:
        body = out.setdefault(
            f"{ROOT}/agent/{a['agent'].replace('/', '_')}/state", {"agent": a["agent"], "name": a["name"], "queues": {}}
        )
        body["queues"][a["queue"]] = {"state": a["state"], "reason": a["reason"], "since": a["since"]}
    for topic, agent in out.items():
        if "/agent/" in topic:
            agent.update(min(agent["queues"].values(), key=lambda s: STATE_RANK.index(s["state"])))
    return out


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def expected_violations(view: ReplayView) -> list[dict[str, Any]]:
    """Live breaches as raised, then one per rule id of each final record (value and limit in seconds)."""
    out: list[dict[str, Any]] = []
    for v in view.outputs:
        if isinstance(v, LiveViolation):
            out.append(
                {
                    "rule": v.rule,
                    "call_id": v.call_id,
                    "agent": v.agent,
                    "queue": v.queue,
                    "value": round(v.value, 1),
                    "limit": v.limit,
                    "live": True,
                    "ts": v.ts,
                }
            )
    policy = view.settings.policies.default
    for r in view.records:
        d = r.to_dict()
        wait = r.time_to_answer_s if r.time_to_answer_s is not None else r.abandoned_after_s
        measured = {
            "answer.within_rings": (wait, policy.rings_limit * policy.ring_seconds),
            "answer.five_rings": (wait, (policy.rings_apology - 1) * policy.ring_seconds),
            "call.unanswered": (wait, None),
            "hold.too_long": (d["hold_max_s"], policy.hold_limit_s),
            "duration.over_max": (d["talk_s"], policy.talk_max_s),
        }
        for rule in r.violations:
            value, limit = measured.get(rule, (None, None))
            out.append(
                {
                    "rule": rule,
                    "call_id": r.call_id,
                    "agent": r.agent,
                    "queue": r.queue,
                    "value": None if value is None else round(value, 1),
                    "limit": limit,
                    "live": False,
                    "ts": epoch(d["ended_at"]),
                }
            )
    return out


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
async def test_records_violations_and_state_mirror_the_engine(broker: Broker, masked: bool) -> None:
    """After replaying captures, the records, violations and retained states on the broker are the engine's."""
    view = ReplayView()
    publisher = make_publisher(broker.url, view, mask_numbers=masked)
    async with Subscriber(broker.port) as sub, running(publisher):
        records = await view.replay(*CAPTURES)
        assert len(records) >= 15
        await wait_until(lambda: len(records_received(sub)) == len(records), what="every record")
        await wait_until(lambda: latest_state(sub) == expected_state(view), what="the retained states")
        violations = expected_violations(view)
        await wait_until(lambda: len(sub.on(f"{ROOT}/violation")) >= len(violations), what="every violation")
    assert records_received(sub) == {r.call_id: expected_record(r, masked) for r in records}
    assert len(sub.matching(lambda t: t.endswith("/record"))) == len(records)  # once each
    got = [json.loads(p) for p in sub.on(f"{ROOT}/violation")]
    assert sorted(got, key=json.dumps) == sorted(violations, key=json.dumps)
    assert {v["rule"] for v in got} >= {"hold.too_long", "answer.within_rings", "call.unanswered"}
    assert any(v["live"] for v in got)
    # No customer number leaves the bridge when masking is on; all of them are there when it is off.
    customers = {r.caller if r.direction is Direction.INBOUND else r.callee for r in records} - {None}
    everything = b"\n".join(m.payload for m in sub.messages)
    assert customers
    for number in customers:
        assert number is not None
        assert (number.encode() in everything) is not masked, number
    assert publisher.outbox.dropped_events == publisher.outbox.dropped_records == 0
    assert publisher.hub_dropped == 0


async def test_retained_state_reaches_a_late_subscriber(broker: Broker) -> None:
    """A subscriber that connects later gets every queue and agent state, retained, and ``online``."""
    view = ReplayView()
    publisher = make_publisher(broker.url, view)
    async with Subscriber(broker.port) as live, running(publisher):
        await view.replay("agent_states", "p")
        expected = expected_state(view)
        assert f"{ROOT}/queue/_all/state" in expected
        assert f"{ROOT}/agent/PJSIP_1001/state" in expected
        await wait_until(lambda: latest_state(live) == expected, what="the retained states")
        async with Subscriber(broker.port) as late:
            await wait_until(lambda: latest_state(late) == expected, what="the retained states (late)")
            await wait_until(lambda: late.on(f"{ROOT}/status") == [b"online"], what="online")
        assert all(m.retain for m in late.messages)


async def test_call_events_arrive_in_order_then_the_record(broker: Broker) -> None:
    """A held call's events arrive as the engine raised them: offered, answered, hold, unhold, then its record."""
    view = ReplayView()
    publisher = make_publisher(broker.url, view)
    async with Subscriber(broker.port, f"{ROOT}/call/#") as sub, running(publisher):
        (record,) = await view.replay("f")
        topic = f"{ROOT}/call/{record.call_id}"
        await wait_until(lambda: bool(sub.on(f"{topic}/record")), what="the record")
    mine = sub.matching(lambda t: t.startswith(f"{topic}/"))
    assert mine[-1].topic == f"{topic}/record"
    events = [json.loads(m.payload) for m in mine[:-1]]
    assert all(m.topic == f"{topic}/event" and not m.retain for m in mine[:-1])
    raised = [live_message(o) for o in view.outputs if getattr(o, "call_id", None) == record.call_id]
    assert events == raised
    kinds = [e["event"] for e in events]
    assert [k for k in kinds if k in ("offered", "answered", "hold", "unhold")] == [
        "offered",
        "answered",
        "hold",
        "unhold",
    ]


async def test_online_at_start_and_offline_after_a_clean_stop(broker: Broker) -> None:
    """``status`` is ``online`` while running; a clean stop sends what is buffered, then a retained ``offline``."""
    view = ReplayView()
    publisher = make_publisher(broker.url, view)
    async with Subscriber(broker.port) as sub:
        async with running(publisher):
            await wait_until(lambda: sub.on(f"{ROOT}/status") == [b"online"], what="online")
            records = await view.replay("a", "b", "d")
            # Stop at once: the records are still on their way.
        await wait_until(lambda: sub.on(f"{ROOT}/status") == [b"online", b"offline"], what="offline")
        assert set(records_received(sub)) == {r.call_id for r in records}
        topics = [m.topic for m in sub.messages]
        assert topics[-1] == f"{ROOT}/status"  # offline comes after the last record
    async with Subscriber(broker.port, f"{ROOT}/status") as late:
        await wait_until(lambda: bool(late.messages), what="the retained status")
        assert late.messages == late.messages[:1]
        assert (late.messages[0].payload, late.messages[0].retain) == (b"offline", True)


async def test_a_stop_with_a_frozen_broker_keeps_to_its_deadline(broker: Broker) -> None:
    """A broker that stops answering cannot hold up the daemon's stop beyond the shutdown deadline."""
    view = ReplayView()
    publisher = make_publisher(broker.url, view, shutdown_timeout_s=1.0)
    async with running(publisher) as task:
        broker.freeze()
        try:
            await view.replay("a", "b")
            await asyncio.sleep(0.2)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 1.0 + 2.0 + 0.5  # deadline + bounded DISCONNECT + slack
        finally:
            broker.freeze(False)
    assert not publisher.connected


CRASHING_BRIDGE = """
import asyncio, sys
from pbx_bridge.config import MqttSettings
from pbx_bridge.hub import Hub
from pbx_bridge.mqtt import MqttPublisher

class View:
    hub = Hub()
    def snapshot(self):
        return {"queues": [], "agents": []}

settings = MqttSettings(enabled=True, url=sys.argv[1], prefix=sys.argv[2], site=sys.argv[3])
asyncio.run(MqttPublisher(settings, View()).run())
"""


async def test_will_announces_offline_when_the_bridge_dies(broker: Broker, tmp_path: Path) -> None:
    """Killed with SIGKILL (no clean stop), the bridge's will makes the broker publish a retained ``offline``."""
    prefix, site = ROOT.split("/")
    async with Subscriber(broker.port, f"{ROOT}/status") as sub:
        with (tmp_path / "bridge.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CRASHING_BRIDGE,
                broker.url,
                prefix,
                site,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "error"},
            )
        try:
            await wait_until(lambda: sub.on(f"{ROOT}/status") == [b"online"], timeout=20, what="online")
        finally:
            proc.kill()
            await proc.wait()
        await wait_until(lambda: sub.on(f"{ROOT}/status") == [b"online", b"offline"], what="the will")
    async with Subscriber(broker.port, f"{ROOT}/status") as late:
        await wait_until(lambda: bool(late.messages), what="the retained status")
        assert (late.messages[0].payload, late.messages[0].retain) == (b"offline", True)


class Gate:
    """Holds the publisher's reconnect attempts until the test opens it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(min(delay, 0.05))
        await self.open.wait()


async def test_broker_restart_loses_no_record(broker: Broker) -> None:
    """Broker killed mid-stream and restarted on its port: records of the outage arrive after it, none is lost,
    measuring never stops, and the retained state is whole again."""
    view = ReplayView()
    gate = Gate()
    publisher = make_publisher(broker.url, view, sleep=gate.sleep)
    busy = view.open("q_busy_hour")  # 50 calls over 12.5 min, fed in three parts
    async with running(publisher):
        async with Subscriber(broker.port) as before:
            first = await view.feed(busy, 2400)
            await wait_until(lambda: len(records_received(before)) == len(first), what="the first records")
            # Hold reconnects back until the test's own subscriber is in place on the new broker:
            # persistence is off, so a record published before anyone subscribes would reach nobody.
            gate.open.clear()
            broker.kill()
            await wait_until(lambda: not publisher.connected, what="the publisher to notice")
        during = await view.feed(busy, 2400)  # the engine goes on; the hub never blocks
        assert len(during) >= 10
        assert len(publisher.outbox.records) >= len(during)
        broker.start()
        async with Subscriber(broker.port) as after:
            gate.open.set()
            await wait_until(lambda: publisher.connected, what="the publisher to reconnect")
            await wait_until(lambda: len(records_received(after)) == len(during), what="the buffered records")
            last = await view.feed(busy)
            assert len(first) + len(during) + len(last) == 50
            await wait_until(lambda: len(records_received(after)) == len(during) + len(last), what="the new records")
            await wait_until(lambda: latest_state(after) == expected_state(view), what="the retained states")
            assert after.on(f"{ROOT}/status")[0] == b"online"
    assert records_received(after) == {r.call_id: expected_record(r, True) for r in during + last}
    assert set(records_received(before)) == {r.call_id for r in first}
    assert publisher.outbox.dropped_records == publisher.outbox.dropped_events == 0
    assert publisher.connects == 2


async def test_records_wait_for_a_broker_that_starts_late(mosquitto: str, tmp_path: Path) -> None:
    """With no broker at start the bridge measures anyway; the records go out once the broker is up."""
    broker = Broker(mosquitto, tmp_path)
    view = ReplayView()
    gate = Gate()
    gate.open.clear()
    publisher = make_publisher(broker.url, view, sleep=gate.sleep)
    try:
        async with running(publisher, connect=False):
            records = await view.replay("a", "c", "o")
            await asyncio.sleep(0.1)
            assert not publisher.connected
            broker.start()
            async with Subscriber(broker.port) as sub:
                gate.open.set()
                await wait_until(lambda: len(records_received(sub)) == len(records), what="the records")
    finally:
        broker.stop()
    assert records_received(sub) == {r.call_id: expected_record(r, True) for r in records}


def make_tls(tmp_path: Path) -> tuple[Path, str]:
    """A throw-away CA, a server certificate for localhost, and the mosquitto listener lines."""
    openssl = find_tool("openssl", "openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=pbx-bridge test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
    )  # fmt: skip
    return tmp_path / "ca.crt", (
        f"cafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n"
    )


async def test_tls_with_username_and_password(mosquitto: str, tmp_path: Path) -> None:
    """Over TLS (CA from ``ca_file``) with a username and password, records arrive; anonymous clients are refused."""
    ca, tls_lines = await asyncio.to_thread(make_tls, tmp_path)
    passwd = tmp_path / "passwd"
    mosquitto_passwd = find_tool("mosquitto_passwd", "mosquitto")
    for user, password in (("bridge", "bridge-pw"), ("reader", "reader-pw")):
        flags = ["-b", "-c"] if user == "bridge" else ["-b"]
        argv = [mosquitto_passwd, *flags, str(passwd), user, password]
        await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
    broker = Broker(mosquitto, tmp_path, extra=f"{tls_lines}password_file {passwd}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    view = ReplayView()
    settings = mqtt_settings(f"mqtts://localhost:{broker.port}", ca_file=ca, username="bridge", password="bridge-pw")
    reader = {"username": "reader", "password": "reader-pw"}
    try:
        broker.start()
        publisher = MqttPublisher(settings, view, backoff_min_s=0.05, backoff_max_s=0.2)
        async with (
            Subscriber(broker.port, host="localhost", tls_context=tls_context(settings), **reader) as sub,
            running(publisher),
        ):
            records = await view.replay("a")
            await wait_until(lambda: len(records_received(sub)) == len(records), what="the record over TLS")
        anonymous = MqttPublisher(mqtt_settings(settings.url, ca_file=ca), view, backoff_min_s=0.05)
        async with running(anonymous, connect=False):
            await asyncio.sleep(0.5)
            assert not anonymous.connected
    finally:
        broker.stop()
