"""The MQTT broker down for 30 s while calls go on (Debian's mosquitto, killed and started again).

The daemon must keep measuring and storing, the publisher must reconnect on its own, every
final record of the outage must reach a subscriber once the broker is back, and the retained
queue and agent states (lost with the broker: it keeps nothing) must be right again.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from faults_support import (
    Feeder,
    MqttWatcher,
    check_reference,
    consumed,
    fault_settings,
    make_day,
    reference,
    relogged,
    running_daemon,
    stored_calls,
    wait_for,
)
from mosquitto_broker import Broker
from structlog.testing import capture_logs

from pbx_bridge.config import MqttSettings
from pbx_bridge.daemon import Daemon, Extras
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.mqtt import MqttPublisher
from pbx_bridge.mqtt.publisher import agent_states, encode, queue_segment, segment

pytestmark = [pytest.mark.slow, pytest.mark.needs_mosquitto]

SEED = 91
OUTAGE_S = 30.0
PREFIX, SITE = "faults", "hq"
ROOT = f"{PREFIX}/{SITE}"


class Gate:
    """The publisher's reconnect sleep, held back while closed (so a subscriber can be ready first)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.open.wait()


def desired_state(daemon: Daemon, publisher: MqttPublisher) -> dict[str, bytes]:
    """The retained topics the daemon's wallboard snapshot calls for (as the publisher's contract says)."""
    snap = daemon.snapshot()
    out = {publisher.topic("status"): b"online"}
    for entry in snap["queues"]:
        out[publisher.topic("queue", queue_segment(str(entry["queue"])), "state")] = encode(entry)
    for agent, body in agent_states(list(snap["agents"])).items():
        out[publisher.topic("agent", segment(agent), "state")] = encode(body)
    return out


async def test_broker_down_30_s_loses_no_record_and_restores_retained_state(
    emulator: AmiEmulator, fault_broker: Broker, tmp_path: Path
) -> None:
    """Measuring goes on through the outage; after it every final record arrives and the retained state is right."""
    data = tmp_path / "data"
    mqtt = MqttSettings(enabled=True, url=fault_broker.url, prefix=PREFIX, site=SITE, mask_numbers=False)
    settings = replace(fault_settings(emulator.port, data), mqtt=mqtt)
    day = make_day(SEED, hours=1.0)
    expected = reference(day.events, settings)
    check_reference(day, expected)
    n = len(day.events)
    before, during, after = day.events[: n // 4], day.events[n // 4 : 3 * n // 4], day.events[3 * n // 4 :]
    gate = Gate()
    publishers: list[MqttPublisher] = []

    async def run_mqtt(daemon: Daemon) -> None:
        publisher = MqttPublisher(
            mqtt, daemon, policies=settings.policies, backoff_min_s=0.05, backoff_max_s=0.5, sleep=gate.sleep
        )
        publishers.append(publisher)
        await publisher.run()

    extras = Extras(mqtt=run_mqtt, mqtt_connected=lambda: publishers[0].connected if publishers else None)
    problems: dict[str, Any] = {}

    with capture_logs() as logs:
        async with MqttWatcher(fault_broker.port, f"{ROOT}/#") as early, running_daemon(settings, extras=extras) as r:
            store = r.daemon.store
            await relogged(r, emulator, 1, logs)
            await wait_for(lambda: bool(publishers) and publishers[0].connected, what="the publisher to connect")
            publisher = publishers[0]
            feeder = Feeder(emulator)
            await feeder.emit(before)
            await consumed(r, feeder)
            await wait_for(lambda: store.stats.pending == 0, what="the store to catch up")
            ended_before = set(stored_calls(data))
            assert ended_before
            await wait_for(lambda: set(early.records()) >= ended_before, what="the records before the outage")

            # -- the broker dies; calls go on for OUTAGE_S seconds
            gate.open.clear()
            fault_broker.kill()
            await wait_for(lambda: not publisher.connected, what="the publisher to notice")
            loop = asyncio.get_running_loop()
            start = loop.time()
            steps = 30
            size = -(-len(during) // steps)
            written = []
            for step in range(steps):
                await feeder.emit(during[step * size : (step + 1) * size])
                await consumed(r, feeder)
                written.append(store.stats.written)
                await asyncio.sleep(max(0.0, start + OUTAGE_S * (step + 1) / steps - loop.time()))
            await wait_for(lambda: store.stats.pending == 0, what="the store to catch up")
            stored_during = stored_calls(data)
            outage_calls = set(stored_during) - ended_before
            if not outage_calls or written[-1] <= written[0]:
                problems["no call measured and stored during the outage"] = written
            if publisher.connected:
                problems["connected to a dead broker?"] = True
            if publisher.outbox.dropped_records:
                problems["records dropped from the outbox"] = publisher.outbox.dropped_records

            # -- the broker is back (empty: it kept nothing); a subscriber first, then the publisher
            fault_broker.start()
            async with MqttWatcher(fault_broker.port, f"{ROOT}/#") as late:
                gate.open.set()
                await wait_for(lambda: publisher.connected, timeout=30, what="the publisher to reconnect")
                await feeder.emit(after)
                await consumed(r, feeder)
                await wait_for(lambda: store.stats.pending == 0, what="the store to catch up")
                stored = stored_calls(data)
                after_outage = set(stored) - ended_before
                try:
                    await wait_for(
                        lambda: set(late.records()) >= after_outage, timeout=30, what="every record after the outage"
                    )
                except AssertionError:
                    problems["records never received after the broker came back"] = sorted(
                        after_outage - set(late.records())
                    )
                got = late.records()
                wrong = sorted(cid for cid in after_outage & set(got) if got[cid] != stored[cid])
                if wrong:
                    problems["records received differ from the stored ones"] = wrong

            # -- the floor is idle now: the retained state the broker holds must be the daemon's
            async with MqttWatcher(fault_broker.port, f"{ROOT}/#") as fresh:
                try:
                    await wait_for(
                        lambda: fresh.retained_state() == desired_state(r.daemon, publisher),
                        timeout=15,
                        what="the published state",
                    )
                except AssertionError:
                    want, have = desired_state(r.daemon, publisher), fresh.retained_state()
                    problems["published state wrong after the outage"] = {
                        "missing": sorted(set(want) - set(have)),
                        "extra": sorted(set(have) - set(want)),
                        "different": sorted(t for t in set(want) & set(have) if want[t] != have[t]),
                    }
            async with MqttWatcher(fault_broker.port, f"{ROOT}/#") as late_comer:
                want = desired_state(r.daemon, publisher)
                try:
                    await wait_for(
                        lambda: late_comer.retained_state(only_retained=True) == want,
                        timeout=5,
                        what="the retained messages",
                    )
                except AssertionError:
                    have = late_comer.retained_state(only_retained=True)
                    problems["retained messages wrong after the outage"] = {
                        "missing": sorted(set(want) - set(have)),
                        "extra": sorted(set(have) - set(want)),
                        "different": sorted(t for t in set(want) & set(have) if want[t] != have[t]),
                    }
            connects = publisher.connects
            assert await r.stop() == 0

    if connects < 2:
        problems["the publisher did not reconnect"] = connects
    records = {cid: rec.to_dict() for cid, rec in expected.records.items()}
    stored = stored_calls(data)
    if set(stored) != set(records) or any(stored[cid] != records[cid] for cid in records):
        problems["the store does not hold the day's calls exactly"] = sorted(set(records) ^ set(stored))
    assert not problems, pformat(problems, width=120)
    # The outage is visible in the logs too.
    assert any(e.get("event") in ("mqtt_disconnected", "mqtt_connect_failed") for e in logs)
    assert outage_calls, "calls ended while the broker was away"
