"""Publishing calls, records, violations and the live floor to an MQTT broker.

Topic tree
----------
Every topic lives under ``<prefix>/<site>/`` (``[mqtt] prefix``, default ``pbx-bridge``, and
``[mqtt] site``, default ``default``). Every message is QoS 1; payloads are UTF-8 JSON, except
``status``::

    <prefix>/<site>/
    ├── status                  retained   online | offline
    ├── queue/<queue>/state     retained   one queue of the wallboard (queue/_all/state: all queues)
    ├── agent/<agent>/state     retained   one agent, with its state in each queue
    ├── call/<call_id>/event    -          a live step of a call
    ├── call/<call_id>/record   -          the final call record
    └── violation               -          a breach of the service standard, live or final

- ``status``: ``online`` while connected; ``offline`` on a clean stop and, as the MQTT will,
  when the connection is lost without one.
- ``queue/<queue>/state``: one entry of the wallboard's ``queues`` list (``waiting``,
  ``longest_wait_s``, ``talking``, ``on_hold``, ``agents`` by state, today's ``offered``,
  ``answered``, ``within_rings_pct``, ``avg_tta_s``, ``violations`` ...).
- ``agent/<agent>/state``: ``{"agent", "name", "state", "reason", "since", "queues": {<queue>:
  {"state", "reason", "since"}}}``; the top-level state is the busiest of the agent's queues
  (on_call > ringing > available > paused > logged_out).
- ``call/<call_id>/event``: ``{"type": "call_event", "event", "call_id", "ts", ...}`` with
  ``event`` one of ``offered``, ``ringing``, ``answered``, ``hold``, ``unhold``, ``transfer``
  (plus ``agent``, ``queue``, ``time_to_answer_s``, ``seconds`` or ``transfer`` as they apply).
- ``call/<call_id>/record``: the call record contract (``CallRecord.to_dict``), once per call,
  after its last event.
- ``violation``: ``{"rule", "call_id", "agent", "queue", "value", "limit", "live", "ts"}``;
  ``live: true`` while the call is still up (a hold past its limit), ``live: false`` once for
  each rule id in a final record's ``violations``.

- Names become one topic level each: ``/``, ``+`` and ``#`` are replaced by ``_``
  (``PJSIP/1001`` → ``agent/PJSIP_1001/state``).
- Queue and agent states are published when their payload changes (checked after events, at
  most four times a second, and every second) and all again after every reconnect. An agent's
  ``seconds`` in the wallboard is left out (it is ``now − since`` and would republish every
  agent every second); a state topic whose queue or agent disappears is cleared (empty
  retained payload).
- ``value`` and ``limit`` are seconds: the wait for ``answer.within_rings`` (limit: rings
  limit × ring length), ``answer.five_rings`` (limit: the 4th ring's end) and
  ``call.unanswered`` (no limit), the longest hold for ``hold.too_long``, the talk time for
  ``duration.over_max``; ``null`` for rules that measure no quantity.
- With ``mask_numbers`` (the default) the customer's number is masked in records
  (``138****5678``): the caller of an inbound call, the callee of an outbound one. The line an
  inbound caller dialled and agents' extensions stay as they are. Live events carry no numbers.
- Timestamps ``ts`` are epoch seconds; a record's times are ISO 8601 UTC (the record contract).

Delivery
--------
The daemon never waits for the broker: the hub hands messages over without blocking, and a
separate task publishes. While the broker is away the bridge goes on measuring; call events
wait in a bounded buffer (1 000; the oldest are dropped and counted) and records and
violations in a separate one (10 000: hours of a busy centre), so an outage that long loses
no final record. A message leaves its buffer only when the broker has acknowledged it (QoS 1 PUBACK);
one in flight when the connection drops is sent again (at least once: a subscriber may see a
record twice, never zero times). Reconnects back off from 1 s, doubling, up to 30 s; after
each, ``online`` and every retained state are published again (a restarted broker may have
lost them), then the buffered messages, oldest first. A clean stop sends what is buffered and
``offline`` within 5 s, then disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import aiomqtt
import structlog

from pbx_bridge.board import ALL_QUEUES, mask_number
from pbx_bridge.config import MqttSettings
from pbx_bridge.engine import rules
from pbx_bridge.engine.policy import PolicySet
from pbx_bridge.errors import ConfigError
from pbx_bridge.hub import Hub, Message, Subscription

log = structlog.get_logger(__name__)

QOS: Final = 1
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
ALL_SEGMENT: Final = "_all"
EVENT_BUFFER: Final = 1_000
RECORD_BUFFER: Final = 10_000
# Publishes in flight at once: one round trip per batch rather than per message.
WINDOW: Final = 16
KEEPALIVE_S: Final = 30
TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 2.0
STATE_MIN_INTERVAL_S: Final = 0.25
_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})
# An agent in several queues has one topic; its top-level state is the busiest of its queues.
_STATE_RANK: Final = {"on_call": 0, "ringing": 1, "available": 2, "paused": 3, "logged_out": 4}

Sleep = Callable[[float], Awaitable[None]]


class LiveView(Protocol):
    """What the publisher reads from the daemon: its live message hub and its wallboard snapshot."""

    @property
    def hub(self) -> Hub: ...

    def snapshot(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------- payloads


def segment(name: str) -> str:
    """One topic level from a name: MQTT's separator and wildcards become ``_``."""
    return name.translate(_UNSAFE) or "_"


def queue_segment(queue: str) -> str:
    """The topic level of a queue; the all-queues total is ``_all``."""
    return ALL_SEGMENT if queue == ALL_QUEUES else segment(queue)


def encode(body: object) -> bytes:
    """Compact UTF-8 JSON (Chinese names stay readable)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def masked_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a record dict with the customer's number masked (``138****5678``).

    The customer is the caller of an inbound call and the callee of an outbound one; the line
    an inbound caller dialled and the agents' extensions are not personal data.
    """
    out = dict(record)
    direction = out.get("direction")
    if direction == "inbound":
        out["caller"] = mask_number(out.get("caller"))
    elif direction == "outbound":
        out["callee"] = mask_number(out.get("callee"))
    return out


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _round(value: object) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) else None


def _measure(rule: str, record: Mapping[str, Any], policies: PolicySet) -> tuple[float | None, float | None]:
    """``(value, limit)`` in seconds of one rule on a final record; ``None`` where nothing is measured."""
    policy = policies.for_queue(record.get("queue"))
    wait = record.get("time_to_answer_s")
    if wait is None:
        wait = record.get("abandoned_after_s")
    if wait is None and rule in (rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS, rules.CALL_UNANSWERED):
        # Dropped by the PBX (unanswered): the record keeps no wait of its own.
        start, end = _epoch(record.get("offered_at") or record.get("arrived_at")), _epoch(record.get("ended_at"))
        wait = end - start if start is not None and end is not None else None
    if rule == rules.ANSWER_WITHIN_RINGS:
        return _round(wait), policy.rings_limit * policy.ring_seconds
    if rule == rules.ANSWER_FIVE_RINGS:
        # "heard the 5th ring" = waited longer than the end of the 4th.
        return _round(wait), (policy.rings_apology - 1) * policy.ring_seconds
    if rule == rules.CALL_UNANSWERED:
        return _round(wait), None
    if rule == rules.HOLD_TOO_LONG:
        return _round(record.get("hold_max_s")), policy.hold_limit_s
    if rule == rules.DURATION_OVER_MAX:
        return _round(record.get("talk_s")), policy.talk_max_s
    if rule == rules.DURATION_OVER_TARGET:
        return _round(record.get("talk_s")), policy.talk_target_s
    return None, None


def final_violations(record: Mapping[str, Any], policies: PolicySet) -> list[dict[str, Any]]:
    """One ``violation`` payload per rule id in a final record's ``violations``."""
    out = []
    for rule in record.get("violations") or ():
        value, limit = _measure(rule, record, policies)
        out.append(
            {
                "rule": rule,
                "call_id": record.get("call_id"),
                "agent": record.get("agent"),
                "queue": record.get("queue"),
                "value": value,
                "limit": limit,
                "live": False,
                "ts": _epoch(record.get("ended_at")),
            }
        )
    return out


def live_violation(message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``violation`` payload of a hub ``violation`` message (a breach still happening)."""
    keys = ("rule", "call_id", "agent", "queue", "value", "limit")
    return {**{k: message.get(k) for k in keys}, "live": True, "ts": message.get("ts")}


def agent_states(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The wallboard's per-queue agent entries, grouped into one payload per agent."""
    agents: dict[str, dict[str, Any]] = {}
    for entry in entries:
        agent = agents.setdefault(entry["agent"], {"agent": entry["agent"], "name": entry.get("name"), "queues": {}})
        agent["queues"][entry["queue"]] = {k: entry.get(k) for k in ("state", "reason", "since")}
    for agent in agents.values():
        top = min(agent["queues"].values(), key=lambda s: _STATE_RANK.get(s["state"], len(_STATE_RANK)))
        agent.update(state=top["state"], reason=top["reason"], since=top["since"])
    return agents


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context the settings ask for (``None`` for plain TCP).

    Raises:
        ConfigError: ``mqtt.ca_file`` cannot be read or holds no certificate.
    """
    if not settings.use_tls:
        return None
    try:
        return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {settings.ca_file}: {exc}") from exc


# --------------------------------------------------------------------------------- buffering


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message waiting for the broker."""

    seq: int
    topic: str
    payload: bytes
    durable: bool  # records and violations: kept in the large buffer


@dataclass(slots=True)
class Outbox:
    """Messages not yet acknowledged by the broker, in two bounded FIFO buffers.

    Call events are worth little once stale, so their buffer is small; records and violations
    have their own, larger one, so a burst of events during an outage cannot push records out.
    ``take`` interleaves the two in the order messages were put.
    """

    event_limit: int = EVENT_BUFFER
    record_limit: int = RECORD_BUFFER
    events: deque[Outgoing] = field(default_factory=deque)
    records: deque[Outgoing] = field(default_factory=deque)
    dropped_events: int = 0
    dropped_records: int = 0
    _seq: int = 0

    def __len__(self) -> int:
        return len(self.events) + len(self.records)

    def put(self, topic: str, payload: bytes, *, durable: bool) -> bool:
        """Queue a message; return False when the buffer was full and its oldest message was dropped."""
        self._seq += 1
        buf, limit = (self.records, self.record_limit) if durable else (self.events, self.event_limit)
        buf.append(Outgoing(self._seq, topic, payload, durable))
        dropped = 0
        while len(buf) > limit:
            buf.popleft()
            dropped += 1
        if durable:
            self.dropped_records += dropped
        else:
            self.dropped_events += dropped
        return not dropped

    def take(self, n: int) -> list[Outgoing]:
        """Remove and return up to ``n`` of the oldest messages, in the order they were put."""
        out: list[Outgoing] = []
        events, records = self.events, self.records
        while len(out) < n and (events or records):
            if records and (not events or records[0].seq < events[0].seq):
                out.append(records.popleft())
            else:
                out.append(events.popleft())
        return out

    def give_back(self, items: list[Outgoing]) -> None:
        """Put messages that were taken but not acknowledged back at the front, in order."""
        for item in reversed(items):
            (self.records if item.durable else self.events).appendleft(item)


# --------------------------------------------------------------------------------- publisher


class MqttPublisher:
    """Mirrors the daemon's live messages and wallboard state to an MQTT broker.

    Args:
        settings: the ``[mqtt]`` section.
        view: the daemon (or anything with ``hub`` and ``snapshot()``).
        policies: thresholds, for the ``limit`` of final violations.
        event_buffer, record_buffer: sizes of the two outage buffers (see :class:`Outbox`).
        backoff_min_s, backoff_max_s: reconnect delays, doubling from min up to max.
        state_interval_s: how often queue/agent states are checked without any event.
        shutdown_timeout_s: how long a clean stop may spend sending what is still buffered and ``offline``.
        sleep: waits between reconnect attempts (tests hold the publisher back with it).
    """

    def __init__(
        self,
        settings: MqttSettings,
        view: LiveView,
        *,
        policies: PolicySet | None = None,
        event_buffer: int = EVENT_BUFFER,
        record_buffer: int = RECORD_BUFFER,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 30.0,
        state_interval_s: float = 1.0,
        shutdown_timeout_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.view = view
        self.policies = policies or PolicySet()
        self.outbox = Outbox(event_buffer, record_buffer)
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.state_interval_s = state_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.root = f"{settings.prefix}/{settings.site}"
        self.published = 0  # messages acknowledged by the broker, state included
        self.connects = 0
        self._sleep = sleep
        self._tls = tls_context(settings)
        self._client_id = f"pbx-bridge-{secrets.token_hex(6)}"
        self._connected = False
        self._retained: dict[str, bytes] = {}  # state topics as the broker has them now
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._inflight: list[_Flight] = []
        self._warned_drop = False

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it has not dropped since."""
        return self._connected

    @property
    def hub_dropped(self) -> int:
        """Messages the hub dropped because this publisher fell behind (should stay 0)."""
        return self._sub.dropped if self._sub is not None else 0

    def topic(self, *levels: str) -> str:
        """A full topic name under ``<prefix>/<site>``."""
        return "/".join((self.root, *levels))

    async def run(self) -> None:
        """Publish until cancelled; never raises otherwise (a broker problem must not stop the daemon)."""
        self._sub = self.view.hub.subscribe()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._intake(self._sub), name="mqtt-intake")
                tg.create_task(self._connect_forever(), name="mqtt-connection")
        finally:
            self.view.hub.unsubscribe(self._sub)

    # ------------------------------------------------------------------ hub → outbox

    async def _intake(self, sub: Subscription) -> None:
        while True:
            self._accept(await sub.queue.get())
            self._drain(sub)

    def _drain(self, sub: Subscription) -> None:
        while not sub.queue.empty():
            self._accept(sub.queue.get_nowait())

    def _accept(self, message: Message) -> None:
        """Turn one hub message into outgoing MQTT messages; wake the sender."""
        kind = message.get("type")
        try:
            if kind == "call_event":
                self._put(self.topic("call", segment(str(message["call_id"])), "event"), message, durable=False)
            elif kind == "record":
                record: dict[str, Any] = message["record"]
                body = masked_record(record) if self.settings.mask_numbers else record
                self._put(self.topic("call", segment(str(record["call_id"])), "record"), body, durable=True)
                for violation in final_violations(record, self.policies):
                    self._put(self.topic("violation"), violation, durable=True)
            elif kind == "violation":
                self._put(self.topic("violation"), live_violation(message), durable=True)
        except (KeyError, TypeError, ValueError):
            # One malformed message is logged and skipped; the stream goes on.
            log.exception("mqtt_bad_message", type=kind, call_id=message.get("call_id"))
        self._wake.set()  # also "tick" and anything else: queue/agent states may have changed

    def _put(self, topic: str, body: object, *, durable: bool) -> None:
        if not self.outbox.put(topic, encode(body), durable=durable) and not self._warned_drop:
            self._warned_drop = True  # once per outage: the counts are logged again on reconnect
            log.warning(
                "mqtt_buffer_full",
                buffer="records" if durable else "events",
                dropped_events=self.outbox.dropped_events,
                dropped_records=self.outbox.dropped_records,
            )

    # ------------------------------------------------------------------ connection

    async def _connect_forever(self) -> None:
        """aiomqtt 2.x does not reconnect by itself: one session per connection, capped back-off between."""
        delay = self.backoff_min_s
        while True:
            was = self.connects
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                event = "mqtt_disconnected" if self.connects != was else "mqtt_connect_failed"
                log.warning(event, broker=f"{self.settings.host}:{self.settings.port}", error=str(exc), retry_s=delay)
            except Exception:  # a bug here must not take the daemon down: log, reconnect
                log.exception("mqtt_error", retry_s=delay)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Stopping: an error raised while saying goodbye must not turn the stop into a retry.
                raise asyncio.CancelledError
            if self.connects != was:
                delay = self.backoff_min_s  # the broker was reachable: retry soon, then back off
            # Jitter spreads out bridges reconnecting to a broker that just came back.
            await self._sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.backoff_max_s)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=self._client_id,
            will=aiomqtt.Will(self.topic("status"), OFFLINE, qos=QOS, retain=True),
            clean_session=True,  # the outbox, not the broker's session, carries messages across outages
            tls_context=self._tls,
            keepalive=KEEPALIVE_S,
            timeout=TIMEOUT_S,
        )
        client.pending_calls_threshold = 2 * WINDOW  # a full window is normal, not worth aiomqtt's warning
        return client

    async def _session(self) -> None:
        """One connection: announce ``online``, send until it drops; say ``offline`` when cancelled."""
        client = self._client()  # a fresh client each time: no state left over from a broken connection
        await self._open(client)
        try:
            self.connects += 1
            self._connected = True
            self._retained.clear()  # a restarted broker may have lost every retained message
            self._warned_drop = False
            log.info(
                "mqtt_connected",
                broker=f"{self.settings.host}:{self.settings.port}",
                pending=len(self.outbox),
                dropped_events=self.outbox.dropped_events,
                dropped_records=self.outbox.dropped_records,
            )
            await client.publish(self.topic("status"), ONLINE, qos=QOS, retain=True)
            await _first_failure(self._watch(client), self._send(client))
        except asyncio.CancelledError:
            await self._goodbye(client)
            raise
        finally:
            self._connected = False
            for flight in list(self._inflight):
                self._land(flight)
            await _close(client)

    async def _open(self, client: aiomqtt.Client) -> None:
        """Connect: the first half of ``async with client``.

        A stop during the handshake lets it finish (for a while) rather than cancel it: aiomqtt
        2.5 then cancels its CONNACK future, and paho trips over that later in a loop callback.
        """
        attempt = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # asyncio.wait does not cancel the attempt when its own time is up.
            await asyncio.wait([attempt], timeout=self.shutdown_timeout_s)
            if _succeeded(attempt):  # connected after all: leave the way a clean stop does
                try:
                    await self._goodbye(client)
                finally:
                    await _close(client)
            raise

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Wait for the connection to drop, then raise MqttError (nothing is subscribed: no message comes)."""
        async for _ in client.messages:
            pass

    async def _send(self, client: aiomqtt.Client) -> None:
        """Send the outbox as it fills; check the queue/agent states after events and every second."""
        loop = asyncio.get_running_loop()
        next_state = 0.0
        while True:
            self._wake.clear()
            if loop.time() >= next_state:
                await self._sync_state(client)
                # A burst of events costs one snapshot per STATE_MIN_INTERVAL_S, not one per event.
                next_state = loop.time() + STATE_MIN_INTERVAL_S
                wait = self.state_interval_s
            else:
                wait = next_state - loop.time()
            while self.outbox:
                await self._flush(client, self.outbox.take(WINDOW))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))

    async def _flush(self, client: aiomqtt.Client, batch: list[Outgoing]) -> None:
        """Publish a batch from the outbox; what the broker did not acknowledge goes back to it."""

        def settle(ok: list[bool]) -> None:
            self.outbox.give_back([m for m, good in zip(batch, ok, strict=True) if not good])

        await self._publish_batch(client, [(m.topic, m.payload, False) for m in batch], settle)

    async def _sync_state(self, client: aiomqtt.Client) -> None:
        """Publish each queue/agent state whose payload differs from what the broker retains."""
        desired = self._desired_state()
        changes = [(topic, payload) for topic, payload in desired.items() if self._retained.get(topic) != payload]
        changes += [(topic, b"") for topic in self._retained if topic not in desired]  # empty retained = delete
        for i in range(0, len(changes), WINDOW):
            chunk = changes[i : i + WINDOW]

            def settle(ok: list[bool], chunk: list[tuple[str, bytes]] = chunk) -> None:
                for (topic, payload), good in zip(chunk, ok, strict=True):
                    if not good:
                        continue
                    if payload:
                        self._retained[topic] = payload
                    else:
                        self._retained.pop(topic, None)

            await self._publish_batch(client, [(t, p, True) for t, p in chunk], settle)

    async def _publish_batch(
        self, client: aiomqtt.Client, batch: list[tuple[str, bytes, bool]], settle: Callable[[list[bool]], None]
    ) -> None:
        """Publish ``(topic, payload, retain)`` messages together and wait for every PUBACK.

        ``settle`` learns which ones the broker acknowledged; then the first error, if any, is
        raised (the connection is presumed broken). Cancelled midway, the batch stays in flight:
        a clean stop still waits for its PUBACKs (no duplicates), a lost connection gives it back.
        """
        if not batch:
            return
        # Tasks start in creation order, so paho puts the messages on the wire in order.
        flight = _Flight([asyncio.ensure_future(client.publish(t, p, qos=QOS, retain=r)) for t, p, r in batch], settle)
        self._inflight.append(flight)
        await asyncio.wait(flight.tasks)
        self._land(flight)
        for t in flight.tasks:
            if (exc := t.exception()) is not None:
                raise exc

    def _land(self, flight: _Flight) -> None:
        """Settle a batch: what has no PUBACK yet is abandoned and goes back to be sent again."""
        if flight in self._inflight:
            self._inflight.remove(flight)
        ok = [_succeeded(t) for t in flight.tasks]
        for t in flight.tasks:
            t.cancel()
        self.published += sum(ok)
        flight.settle(ok)

    def _desired_state(self) -> dict[str, bytes]:
        snap = self.view.snapshot()
        out = {
            self.topic("queue", queue_segment(str(entry["queue"])), "state"): encode(entry)
            for entry in snap.get("queues", ())
        }
        for agent, body in agent_states(list(snap.get("agents", ()))).items():
            out[self.topic("agent", segment(agent), "state")] = encode(body)
        return out

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Clean stop: send what is buffered, then the retained ``offline``, all within the deadline.

        A clean DISCONNECT makes the broker discard the will, so ``offline`` is published here. The
        daemon writes its last records to the store only after this task ends: a broker that
        stopped answering must not hold that up, hence one deadline for everything.
        """
        deadline = asyncio.get_running_loop().time() + self.shutdown_timeout_s
        reserve = min(1.0, self.shutdown_timeout_s / 2)  # kept back for ``offline``
        if self._sub is not None:
            self._drain(self._sub)
        try:
            async with asyncio.timeout_at(deadline - reserve):
                if pending := [t for flight in self._inflight for t in flight.tasks]:
                    await asyncio.wait(pending)
                for flight in list(self._inflight):
                    self._land(flight)
                while self.outbox:
                    await self._flush(client, self.outbox.take(WINDOW))
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.warning("mqtt_unsent_at_stop", pending=len(self.outbox), error=str(exc) or type(exc).__name__)
        try:
            async with asyncio.timeout_at(deadline):
                await client.publish(self.topic("status"), OFFLINE, qos=QOS, retain=True)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.warning("mqtt_offline_not_sent", error=str(exc) or type(exc).__name__)
        log.info("mqtt_stopped", published=self.published, dropped_events=self.outbox.dropped_events)


@dataclass(frozen=True, slots=True, eq=False)
class _Flight:
    """A batch of publishes waiting for their PUBACKs, and what to do with the outcome."""

    tasks: list[asyncio.Future[None]]
    settle: Callable[[list[bool]], None]


def _succeeded(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _close(client: aiomqtt.Client) -> None:
    """The second half of ``async with client``: DISCONNECT if still connected.

    Never raises: an error here must not replace a cancellation (the daemon waits for this task).
    """
    try:
        # paho sends DISCONNECT and closes the socket without waiting for the broker: quick, but
        # bounded all the same.
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.__aexit__(None, None, None)
    except Exception as exc:  # nothing left to do about a failed goodbye
        log.debug("mqtt_disconnect_failed", error=str(exc) or type(exc).__name__)


async def _first_failure(*coros: Awaitable[None]) -> None:
    """Run coroutines together until the first one ends; cancel the rest and re-raise its error.

    Unlike a TaskGroup this raises the error itself (``MqttError``), not an ExceptionGroup.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()


class MqttService:
    """The daemon's MQTT part: ``Extras(mqtt=service.run, mqtt_connected=service.connected)``.

    Built from settings before the daemon exists (so a bad ``ca_file`` fails at start-up); the
    publisher itself is created when the daemon starts the task.
    """

    def __init__(self, settings: MqttSettings, *, policies: PolicySet | None = None) -> None:
        if not settings.host:
            raise ConfigError(f"mqtt.url: must look like 'mqtt://host:port', got {settings.url!r}")
        tls_context(settings)
        self.settings = settings
        self.policies = policies
        self.publisher: MqttPublisher | None = None

    async def run(self, view: LiveView) -> None:
        """The long-running task: publish the view's messages until cancelled."""
        self.publisher = MqttPublisher(self.settings, view, policies=self.policies)
        await self.publisher.run()

    def connected(self) -> bool:
        """For the ``pbx_bridge_mqtt_connected`` gauge."""
        return self.publisher is not None and self.publisher.connected
