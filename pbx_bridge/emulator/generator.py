"""A synthetic call-centre day: AMI events shaped like Asterisk 22's, plus the ground truth.

Theory of operation
-------------------
Everything is drawn from one ``random.Random(seed)``, so a seed gives the same
bytes every time. Calls arrive as a Poisson process. Each call is *planned*
whole when it arrives: which agent rings when, whether it rings out, when it
is answered, holds, transfers and who hangs up. Planning picks agents from a
per-queue heap keyed by the time each agent is next free (longest idle first,
pauses and logouts skipped), so agents never take two calls at once and a
caller waits in the queue while everyone is busy, or gives up.

A plan is a time-ordered list of events for that call; all plans go into
one heap and come out in timestamp order. Memory therefore holds only calls
in progress, whatever the length of the day. A few fields depend on every
call at once (queue ``Position``/``Count``, a member's ``CallsTaken``,
``InCall`` and ``Paused``); those events are planned as markers and filled in
when they leave the heap, from state that by then reflects every earlier event.

Each event copies the header set and the surrounding order of the matching
real capture in ``tests/fixtures/traces``: ``a`` answered, ``b`` agent hangs up,
``c``/``e`` ring-no-answer (two ``DialEnd``), ``d`` abandon, ``f``/``g``/``h`` holds,
``hold_hangup_*`` hang-up during hold, ``i``/``j`` blind transfer (spurious
``Unhold``, ``AgentComplete`` with or without ``Dest*``), ``k``/``l`` attended
transfer through ``Local/<ext>@agents-…;1/;2`` (``Hold`` without ``MusicClass``,
no ``AttendedTransfer`` when aborted), ``n`` direct call, ``o`` outbound
callback, ``agent_states`` member events. Shapes the captures do not show
(an agent or transfer target hanging up first on a ``Dial()`` call) follow
the same pattern with the roles swapped.

Each call also yields a ground-truth record in the format of the capture
truth files, which ``tools/check_truth.py`` compares with pbx-bridge's output.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from pbx_bridge.ami.frames import encode_frame
from pbx_bridge.emulator import events as evt
from pbx_bridge.emulator.events import DOWN, RING, RINGING, UP, Bridge, Chan, Snap

Event = tuple[float, dict[str, str]]
Truth = dict[str, Any]

QUEUE_TIMEOUT = 15.0  # queues.conf timeout: a member rings this long before RONA
QUEUE_RETRY = 2.0  # queues.conf retry: pause before the next member rings
BANNER = "Asterisk Call Manager/11.0.0"
CUSTOMER_DEVICE = "PJSIP/customer"
BACK_OFFICE_NAME = "Back Office"
PAUSE_REASONS = (("break", 0.5), ("lunch", 0.2), ("training", 0.2), ("admin", 0.1))
UTF8_NAMES = ("张伟", "王芳", "李娜", "José Müller", "Zoë Ångström", "Ørjan Kjærsgård")


@dataclass(frozen=True, slots=True)
class CallMix:
    """How often each thing happens (probabilities)."""

    direct: float = 0.06
    outbound: float = 0.07
    short_abandon: float = 0.04
    patience_mean: float = 150.0
    rona: float = 0.07
    hold: float = 0.22
    second_hold: float = 0.3
    long_hold: float = 0.2
    end_on_hold: float = 0.08
    blind: float = 0.06
    blind_answered: float = 0.7
    attended: float = 0.05
    attended_completed: float = 0.7
    agent_hangs_up: float = 0.25
    talk_median: float = 80.0


@dataclass(frozen=True, slots=True)
class DayConfig:
    """One generated day.

    Attributes:
        seed: the only source of randomness.
        agents: queue agents (extensions from 1001).
        calls_per_hour: mean arrival rate of all calls (inbound, direct and outbound).
        hours: length of the day; arrivals stop then, calls in progress finish.
        start_epoch: Unix time of the first event.
        queues: queue names; queue ``i`` is reached on line ``600 + i``.
        tier2: second-level agents outside the queues (transfer targets, direct
            calls, callbacks); None means ``max(1, agents // 10)``.
        noise: also emit ``Newexten``/``VarSet`` like a real dialplan does.
        mix: probabilities of each behaviour.
    """

    seed: int = 1
    agents: int = 10
    calls_per_hour: float = 60.0
    hours: float = 1.0
    start_epoch: float = 1_795_000_000.0
    queues: tuple[str, ...] = ("support", "sales")
    tier2: int | None = None
    noise: bool = True
    mix: CallMix = field(default_factory=CallMix)


# Markers whose fields are filled in when they leave the heap (see module docstring).
_QJOIN, _QLEAVE, _MEMBER, _INCALL, _MADD, _MREMOVE, _MPAUSE, _CUSTDEV = range(8)


class _Script:
    """One call's events in time order; ``ev`` stamps an event and advances the clock a little."""

    __slots__ = ("items", "noise", "rng", "t")

    def __init__(self, rng: random.Random, t: float, noise: bool) -> None:
        self.rng = rng
        self.t = t
        self.noise = noise
        self.items: list[tuple[float, object]] = []

    def at(self, t: float) -> None:
        self.t = max(self.t, t)

    def _advance(self) -> float:
        ts = self.t
        # Asterisk publishes related events 0.1-1 ms apart.
        self.t = ts + 0.0001 + self.rng.random() * 0.0006
        return ts

    def ev(self, fn: Callable[..., dict[str, str]], *args: Any, **kwargs: Any) -> float:
        ts = self._advance()
        self.items.append((ts, fn(ts, *args, **kwargs)))
        return ts

    def chan(self, name: str, s: Snap, *extra: tuple[str, str]) -> float:
        return self.ev(evt.chan_event, name, s, *extra)

    def mark(self, *item: Any) -> float:
        ts = self._advance()
        self.items.append((ts, item))
        return ts


class _Agent:
    """A phone that can take calls: its schedule and when it is next free."""

    __slots__ = ("ext", "free_at", "idx", "name", "queues", "version", "windows")

    def __init__(self, idx: int, ext: str, name: str, queues: tuple[str, ...]) -> None:
        self.idx = idx
        self.ext = ext
        self.name = name
        self.queues = queues
        self.free_at = -math.inf
        self.version = 0
        # Sorted, non-overlapping (start, end, kind, reason): kind "out" (logged out) or "pause".
        self.windows: list[tuple[float, float, str, str]] = []

    def next_available(self, t: float) -> float:
        for start, end, _, _ in self.windows:
            if t < start:
                break
            t = max(t, end)
        return t


class _Pool:
    """Agents of one queue (or the tier-2 group) ordered by when they are next free."""

    __slots__ = ("agents", "heap")

    def __init__(self, agents: list[_Agent]) -> None:
        self.agents = agents
        self.heap: list[tuple[float, int, int]] = []

    def push(self, a: _Agent) -> None:
        heapq.heappush(self.heap, (a.free_at, a.version, a.idx))

    def pick(self, t: float, deadline: float) -> tuple[_Agent, float] | None:
        heap = self.heap
        while heap:
            key, version, idx = heap[0]
            a = self.agents[idx]
            if version != a.version:
                heapq.heappop(heap)
                continue
            earliest = max(key, t)
            start = a.next_available(earliest)
            if start == math.inf:
                heapq.heappop(heap)
                continue
            if start > earliest:
                heapq.heapreplace(heap, (start, version, idx))
                continue
            return (a, start) if start <= deadline else None
        return None


@dataclass(slots=True)
class _Ring:
    """One member attempt in progress."""

    a: Chan
    agent: _Agent
    who: evt.Member
    start: float
    attempt: dict[str, Any]


@dataclass(slots=True)
class _QueueLeg:
    """A queue call once a member answered: the parties, their bridge, what AgentComplete repeats."""

    truth: Truth
    c: Chan
    a: Chan
    b: Bridge
    agent: _Agent
    who: evt.Member
    hold_time: str
    answered: float
    tags: list[str]


def _r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class DayGenerator:
    """Generates one day lazily; see :func:`generate_day` for the simple entry point.

    Args:
        config: what to generate.
        on_call: receives each call's ground truth as soon as the call is planned
            (in arrival order), so nothing accumulates in memory.
    """

    def __init__(self, config: DayConfig, on_call: Callable[[Truth], None] | None = None) -> None:
        self.cfg = config
        self.on_call = on_call
        self.rng = random.Random(config.seed)
        self.noise = config.noise
        self.start = config.start_epoch
        self.end = config.start_epoch + config.hours * 3600.0
        rng = self.rng
        self._uid = rng.randint(10, 400)
        self._chan = rng.randint(0x10, 0x200)
        self._local = 0
        self._local_opt = 0
        self._number = 5_600_000 + rng.randint(0, 300_000)
        self._calls = 0
        self.lines = {q: str(600 + i) for i, q in enumerate(config.queues)}
        self._build_agents()
        # Render-time state (see module docstring).
        self._waiting: dict[str, list[str]] = {q: [] for q in config.queues}
        self._orig_pos: dict[str, int] = {}
        self._customers = 0
        self._member: dict[tuple[str, str], list[Any]] = {}
        self._device: dict[str, int] = {}

    # ----------------------------------------------------------------- agents and schedule

    def _build_agents(self) -> None:
        cfg, rng = self.cfg, self.rng
        queues = cfg.queues
        self.agents: list[_Agent] = []
        self.pools = {q: _Pool(self.agents) for q in queues}
        weights = [1.0 / (i + 1) for i in range(len(queues))]
        for i in range(cfg.agents):
            ext = str(1001 + i)
            # The first agents cover every queue once, so no queue is left without members.
            primary = queues[i] if i < len(queues) else rng.choices(queues, weights)[0]
            member_of = [primary]
            if len(queues) > 1 and rng.random() < 0.15:
                member_of.append(rng.choice([q for q in queues if q != primary]))
            ordered = tuple(q for q in queues if q in member_of)
            self.agents.append(_Agent(i, ext, f"Agent {ext}", ordered))
        n_tier2 = cfg.tier2 if cfg.tier2 is not None else max(1, cfg.agents // 10)
        self.tier2: list[_Agent] = []
        for j in range(n_tier2):
            ext = str(1001 + cfg.agents + j)
            a = _Agent(len(self.agents), ext, f"Tier2 {ext}", ())
            self.agents.append(a)
            self.tier2.append(a)
        self.tier2_pool = _Pool(self.agents)
        self.back_office = (str(1001 + cfg.agents + n_tier2), BACK_OFFICE_NAME)
        self._queue_weights = [sum(q in a.queues for a in self.agents) or 0.001 for q in queues]

        day = self.end - self.start
        spread = min(20.0, 0.01 * day)
        self.login_done = self.start + spread
        for a in self.agents:
            login = self.start + rng.uniform(0.0, spread)
            logout = self.end + rng.uniform(30.0, 150.0)
            windows = [(-math.inf, login, "out", ""), (logout, math.inf, "out", "")]
            if a.queues:
                for start, end, kind, reason in self._breaks(login, logout):
                    if all(end + 30 < s or start > e + 30 for s, e, _, _ in windows):
                        windows.append((start, end, kind, reason))
            windows.sort()
            a.windows = windows
            a.free_at = login
            for q in a.queues:
                self.pools[q].push(a)
            if not a.queues:
                self.tier2_pool.push(a)

    def _breaks(self, login: float, logout: float) -> list[tuple[float, float, str, str]]:
        rng = self.rng
        day = logout - login
        out: list[tuple[float, float, str, str]] = []
        if day >= 4 * 3600:
            mid = login + day * rng.uniform(0.4, 0.6)
            out.append((mid, mid + rng.uniform(1800, 3600), "pause", "lunch"))
        slots = max(1, math.ceil(day / 1800))
        for k in range(slots):
            if rng.random() < 0.25:
                start = login + (k + rng.random()) * day / slots
                reason = rng.choices([r for r, _ in PAUSE_REASONS], [w for _, w in PAUSE_REASONS])[0]
                length = rng.uniform(60.0, max(90.0, min(900.0, 0.2 * day)))
                out.append((start, start + length, "pause", reason))
        if rng.random() < 0.08:
            start = login + day * rng.uniform(0.2, 0.7)
            out.append((start, start + rng.uniform(120.0, max(150.0, min(1800.0, 0.25 * day))), "out", ""))
        return [w for w in out if w[1] < logout - 5]

    def _schedule_markers(self) -> list[tuple[float, object]]:
        """Member login/pause/logout markers for the whole day (a few per agent)."""
        items: list[tuple[float, object]] = []
        for a in self.agents:
            if not a.queues:
                continue
            for start, end, kind, reason in a.windows:
                if kind == "out":
                    if start != -math.inf:
                        items.extend((start + 0.0001 * k, (_MREMOVE, a.ext, q)) for k, q in enumerate(a.queues))
                    if end != math.inf:
                        items.extend((end + 0.0001 * k, (_MADD, a.ext, q)) for k, q in enumerate(a.queues))
                else:
                    items.append((start, (_MPAUSE, a.ext, True, reason)))
                    items.append((end, (_MPAUSE, a.ext, False, "")))
        return items

    def agents_truth(self) -> list[Truth]:
        """Login and availability intervals per agent and queue, as in ``agent_states.json``."""
        out: list[Truth] = []
        for a in self.agents:
            outs = [(s, e) for s, e, k, _ in a.windows if k == "out"]
            login, logout = outs[0][1], outs[-1][0]
            for q in a.queues:
                cursor = login
                for s, e in outs[1:-1]:
                    out.append(_interval(a.ext, q, "login", "logged_in", start=cursor, end=s))
                    out.append(_interval(a.ext, q, "login", "logged_out", start=s, end=e))
                    cursor = e
                out.append(_interval(a.ext, q, "login", "logged_in", start=cursor, end=logout))
                cursor = login
                for s, e, kind, reason in a.windows[1:-1]:
                    out.append(_interval(a.ext, q, "availability", "available", start=cursor, end=s))
                    if kind == "pause":
                        out.append(_interval(a.ext, q, "availability", "paused", reason=reason, start=s, end=e))
                    cursor = e
                out.append(_interval(a.ext, q, "availability", "available", start=cursor, end=logout))
        return out

    # ----------------------------------------------------------------- ids

    def _uniqueid(self, ts: float) -> str:
        self._uid += 1
        return f"{int(ts)}.{self._uid}"

    def _chan_name(self, prefix: str) -> str:
        self._chan += 1
        return f"{prefix}-{self._chan:08x}"

    def _bridge(self) -> Bridge:
        return Bridge(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))

    def _customer(self) -> tuple[str, str]:
        self._number += 1
        num = str(self._number)
        if self.rng.random() < 0.05:
            return num, self.rng.choice(UTF8_NAMES)
        return num, f"Customer {num[-4:]}"

    def _call_id(self) -> str:
        self._calls += 1
        return f"g{self._calls}"

    # ----------------------------------------------------------------- the event stream

    def events(self) -> Iterator[Event]:
        """All events of the day in timestamp order (lazy)."""
        heap: list[tuple[float, int, object]] = []
        seq = 0
        for ts, item in self._schedule_markers():
            heap.append((ts, seq, item))
            seq += 1
        heapq.heapify(heap)
        rate = self.cfg.calls_per_hour / 3600.0
        nxt: float | None = None
        if rate > 0:
            nxt = self.login_done + self.rng.expovariate(rate)
            if nxt > self.end:
                nxt = None
        render = self._render
        while True:
            if nxt is not None and (not heap or nxt < heap[0][0]):
                for ts, item in self._plan_call(nxt):
                    heapq.heappush(heap, (ts, seq, item))
                    seq += 1
                nxt += self.rng.expovariate(rate)
                if nxt > self.end:
                    nxt = None
                continue
            if not heap:
                return
            ts, _, item = heapq.heappop(heap)
            if type(item) is dict:
                yield ts, item
            else:
                yield from render(ts, cast(tuple[Any, ...], item))

    def _plan_call(self, arrival: float) -> list[tuple[float, object]]:
        mix = self.cfg.mix
        r = self.rng.random()
        truth: Truth | None = None
        s = _Script(self.rng, arrival, self.noise)
        if r < mix.direct:
            truth = self._direct_call(s, arrival)
        elif r < mix.direct + mix.outbound:
            truth = self._outbound_call(s, arrival)
        if truth is None:
            s = _Script(self.rng, arrival, self.noise)
            truth = self._queue_call(s, arrival)
        if self.on_call is not None:
            self.on_call(truth)
        return s.items

    # ----------------------------------------------------------------- render-time state

    def _member_values(self, ext: str, queue: str) -> tuple[str, ...]:
        calls, last_call, last_pause, login, in_call, paused, reason = self._member[(ext, queue)]
        return (
            queue,
            f"agent{ext}",
            f"PJSIP/{ext}",
            f"PJSIP/{ext}",
            "dynamic",
            "0",
            str(calls),
            str(last_call),
            str(last_pause),
            str(login),
            str(in_call),
            str(self._device.get(ext, 1)),
            "1" if paused else "0",
            reason,
            "0",
            "0",
        )

    def _render(self, ts: float, item: tuple[Any, ...]) -> Iterator[Event]:
        kind = item[0]
        if kind == _QJOIN:
            _, queue, s, uid = item
            waiting = self._waiting[queue]
            if not waiting:
                yield ts, evt.device_state(ts, f"Queue:{queue}", "RINGING")
            waiting.append(uid)
            pos = len(waiting)
            self._orig_pos[uid] = pos
            yield ts, evt.queue_caller(ts, "QueueCallerJoin", s, queue=queue, position=pos, count=pos)
        elif kind == _QLEAVE:
            _, queue, s, uid, abandon_wait = item
            waiting = self._waiting[queue]
            pos = waiting.index(uid) + 1
            waiting.remove(uid)
            orig = self._orig_pos.pop(uid, pos)
            if abandon_wait is not None:
                yield ts, evt.queue_caller_abandon(ts, s, queue=queue, position=pos, original=orig,
                                                  hold_time=abandon_wait)
            if not waiting:
                yield ts, evt.device_state(ts, f"Queue:{queue}", "NOT_INUSE")
            yield ts, evt.queue_caller(ts, "QueueCallerLeave", s, queue=queue, position=pos, count=len(waiting))
        elif kind == _MEMBER:
            _, ext, status, completed_queue = item
            self._device[ext] = status
            for q in self._agent_queues(ext):
                state = self._member.get((ext, q))
                if state is None or state[3] is None:
                    continue
                if completed_queue is not None:
                    state[1] = int(ts)  # shared_lastcall=yes: every queue sees the last call
                    if q == completed_queue:
                        state[0] += 1
                yield ts, evt.queue_member(ts, "QueueMemberStatus", self._member_values(ext, q))
        elif kind == _INCALL:
            _, ext, flag = item
            for q in self._agent_queues(ext):
                state = self._member.get((ext, q))
                if state is not None:
                    state[4] = flag
        elif kind == _MADD:
            _, ext, q = item
            prev = self._member.get((ext, q))
            in_call = prev[4] if prev else 0
            self._member[(ext, q)] = [0, 0, 0, int(ts), in_call, False, ""]
            yield ts, evt.queue_member(ts, "QueueMemberAdded", self._member_values(ext, q))
        elif kind == _MREMOVE:
            _, ext, q = item
            state = self._member.get((ext, q))
            if state is not None and state[3] is not None:
                values = self._member_values(ext, q)
                state[3] = None
                state[5] = False
                state[6] = ""
                yield ts, evt.queue_member(ts, "QueueMemberRemoved", values)
        elif kind == _MPAUSE:
            _, ext, paused, reason = item
            for q in self._agent_queues(ext):
                state = self._member.get((ext, q))
                if state is None or state[3] is None:
                    continue
                state[5] = paused
                state[6] = reason
                if paused:
                    state[2] = int(ts)
                yield ts, evt.queue_member(ts, "QueueMemberPause", self._member_values(ext, q))
        elif kind == _CUSTDEV:
            delta = item[1]
            before = self._customers
            self._customers += delta
            if before == 0 and self._customers > 0:
                yield ts, evt.device_state(ts, CUSTOMER_DEVICE, "INUSE")
            elif before > 0 and self._customers == 0:
                yield ts, evt.device_state(ts, CUSTOMER_DEVICE, "UNAVAILABLE")

    def _agent_queues(self, ext: str) -> tuple[str, ...]:
        idx = int(ext) - 1001
        if 0 <= idx < len(self.agents):
            return self.agents[idx].queues
        return ()

    # ----------------------------------------------------------------- building blocks

    def _reserve(self, a: _Agent, until: float) -> None:
        a.version += 1
        a.free_at = until
        if a.queues:
            for q in a.queues:
                self.pools[q].push(a)
        else:
            self.tier2_pool.push(a)

    def _truth(self, *, number: str, dialed: str, queue: str | None, arrival: float, scenario: str,
               direction: str = "inbound") -> Truth:
        return {
            "call_id": self._call_id(),
            "scenario": scenario,
            "direction": direction,
            "caller_number": number,
            "dialed": dialed,
            "queue": queue,
            "arrival_epoch": _r3(arrival),
            "ivr_answer_epoch": None,
            "ring_attempts": [],
            "answered_by": None,
            "answer_epoch": None,
            "seconds_to_answer": None,
            "holds": [],
            "transfers": [],
            "end_epoch": None,
            "hangup_first": None,
            "ended_on_hold": False,
            "abandoned": False,
            "abandon_wait_seconds": None,
            "talk_seconds": None,
            "duration_seconds": None,
            "final_agent": None,
            "plan": {"number": number, "dial": dialed},
            "notes": [],
        }

    def _finish(self, t: Truth, end: float, hangup_first: str) -> Truth:
        t["end_epoch"] = _r3(end)
        t["hangup_first"] = hangup_first
        t["duration_seconds"] = _r3(end - t["arrival_epoch"])
        if t["answer_epoch"] is not None:
            t["talk_seconds"] = _r3(end - t["answer_epoch"])
        if t["abandoned"]:
            t["abandon_wait_seconds"] = _r3(end - t["arrival_epoch"])
        return t

    def _answer_delay(self) -> float:
        r = self.rng.random()
        if r < 0.55:
            return self.rng.uniform(1.5, 6.0)
        if r < 0.85:
            return self.rng.uniform(6.5, 11.0)
        return self.rng.uniform(11.5, 14.5)

    def _talk(self) -> float:
        mu = math.log(self.cfg.mix.talk_median)
        return min(1800.0, max(3.0, self.rng.lognormvariate(mu, 0.9)))

    def _hold_length(self) -> float:
        if self.rng.random() < self.cfg.mix.long_hold:
            return self.rng.uniform(62.0, 120.0)
        return self.rng.uniform(4.0, 50.0)

    def _new_agent_leg(self, agent: _Agent, linkedid: str, ts: float) -> Chan:
        """The channel Asterisk creates to ring an agent's phone: Down, ``agents,s,1``."""
        return Chan(self._chan_name(f"PJSIP/{agent.ext}"), self._uniqueid(ts), linkedid, state=DOWN,
                    cid_num=agent.ext, cid_name=agent.name, context="agents", exten="s")

    # ----------------------------------------------------------------- queue calls

    def _queue_call(self, s: _Script, arrival: float) -> Truth:
        rng, mix = self.rng, self.cfg.mix
        queue = rng.choices(self.cfg.queues, self._queue_weights)[0]
        line = self.lines[queue]
        num, cname = self._customer()
        truth = self._truth(number=num, dialed=line, queue=queue, arrival=arrival, scenario="queue")
        s.at(arrival + 0.002 + rng.random() * 0.001)
        uid = self._uniqueid(s.t)
        c = Chan(self._chan_name(CUSTOMER_DEVICE), uid, uid, state=RING, cid_num=num, cid_name=cname,
                 context="from-customer", exten=line)
        s.chan("Newchannel", c.snap())
        if s.noise:
            s.ev(evt.var_set, c.snap(), "SIPDOMAIN", "127.0.0.1")
            s.ev(evt.new_exten, c.snap(), line, "NoOp", f"{queue.capitalize()} line call from {num}")
            c.priority = 2
            s.ev(evt.new_exten, c.snap(), line, "Answer", "")
        c.priority = 2
        c.state = UP
        truth["ivr_answer_epoch"] = _r3(s.chan("Newstate", c.snap()))
        s.mark(_CUSTDEV, 1)
        s.at(s.t + 0.03 + rng.random() * 0.015)
        c.priority = 3
        if s.noise:
            s.ev(evt.new_exten, c.snap(), line, "Queue", f"{queue},t")
        join = s.mark(_QJOIN, queue, c.snap(), uid)
        s.ev(evt.moh_start, c.snap())

        if rng.random() < mix.short_abandon:
            patience = rng.uniform(2.0, 8.0)
        else:
            patience = 10.0 + rng.expovariate(1.0 / mix.patience_mean)
        give_up = arrival + patience
        x = join + 0.001
        pool = self.pools[queue]
        while True:
            picked = pool.pick(x, give_up)
            if picked is None:
                truth["scenario"] = "abandon_in_queue"
                return self._abandon(s, truth, c, queue=queue, join=join, at=give_up, ringing=None)
            agent, ring_at = picked
            s.at(ring_at)
            ring = self._ring_member(s, c, agent, queue)
            truth["ring_attempts"].append(ring.attempt)
            if rng.random() < mix.rona:
                ring_end = ring.start + QUEUE_TIMEOUT
                if give_up < ring_end:
                    self._reserve(agent, give_up + 0.01)
                    truth["scenario"] = "abandon_ringing"
                    return self._abandon(s, truth, c, queue=queue, join=join, at=give_up, ringing=ring)
                s.at(ring_end)
                s.ev(evt.agent_event, "AgentRingNoAnswer", c.snap(), ring.a.snap(), ring.who,
                     ("RingTime", str(int(QUEUE_TIMEOUT * 1000))))
                end = s.ev(evt.dial, "DialEnd", c.snap(), ring.a.snap(), ("DialStatus", "NOANSWER"))
                s.ev(evt.dial, "DialEnd", c.snap(), ring.a.snap(), ("DialStatus", "CANCEL"))
                s.ev(evt.hangup, ring.a.snap(), 0)
                s.ev(evt.device_state, ring.who.interface, "NOT_INUSE")
                s.mark(_MEMBER, agent.ext, 1, None)
                ring.attempt.update(ring_end_epoch=_r3(end), outcome="no-answer (ring timeout)",
                                    ring_seconds=_r3(end - ring.start))
                # An agent who lets a call ring out is away from the desk for a while.
                self._reserve(agent, end + rng.uniform(20.0, 120.0))
                x = end + QUEUE_RETRY
                # A caller hanging up within ms of a ring-out is indistinguishable from one who cut the
                # ring short; the truth would be ambiguous, so leave half a second between the two.
                if give_up < end + 0.5:
                    give_up = end + 0.5 + rng.random() * 0.5
                continue
            answer_at = ring.start + self._answer_delay()
            if give_up < answer_at:
                self._reserve(agent, give_up + 0.01)
                truth["scenario"] = "abandon_ringing"
                return self._abandon(s, truth, c, queue=queue, join=join, at=give_up, ringing=ring)
            s.at(answer_at)
            leg = self._connect(s, truth, c, ring, join)
            return self._talk_and_end(s, leg)

    def _ring_member(self, s: _Script, c: Chan, agent: _Agent, queue: str) -> _Ring:
        """AgentCalled, DialBegin, Ringing: the first milliseconds of one member attempt (a.ami)."""
        who = evt.Member(queue, f"PJSIP/{agent.ext}", f"agent{agent.ext}")
        a = self._new_agent_leg(agent, c.linkedid, s.t)
        s.chan("Newchannel", a.snap())
        created = a.snap()
        if s.noise:
            s.ev(evt.var_set, a.snap(), "DIALEDPEERNUMBER", agent.ext)
        a.connect(c)
        a.exten = c.exten
        s.ev(evt.agent_event, "AgentCalled", c.snap(), a.snap(), who)
        # DialBegin carries the callee as created (Down, agents,s,1): Asterisk's cached snapshot.
        s.ev(evt.dial, "DialBegin", c.snap(), created, ("DialString", who.interface))
        c.connect(a)
        s.chan("NewConnectedLine", c.snap())
        a.state = RINGING
        start = s.chan("Newstate", a.snap())
        if s.noise:
            s.ev(evt.new_exten, a.snap(), c.exten, "AppQueue", "(Outgoing Line)")
        s.chan("NewConnectedLine", a.snap())
        s.ev(evt.device_state, who.interface, "BUSY")
        s.mark(_MEMBER, agent.ext, 3, None)
        s.ev(evt.dial, "DialState", c.snap(), a.snap(), ("DialStatus", "RINGING"))
        return _Ring(a=a, agent=agent, who=who, start=start,
                     attempt={"agent": agent.ext, "ring_start_epoch": _r3(start)})

    def _abandon(self, s: _Script, truth: Truth, c: Chan, *, queue: str, join: float, at: float,
                 ringing: _Ring | None) -> Truth:
        """The caller hangs up in the queue, maybe while a member rings (c.ami, d.ami)."""
        s.at(at)
        end = s.ev(evt.hangup_request, c.snap())
        s.chan("MusicOnHoldStop", c.snap())
        if ringing is not None:
            s.ev(evt.dial, "DialEnd", c.snap(), ringing.a.snap(), ("DialStatus", "CANCEL"))
            s.ev(evt.dial, "DialEnd", c.snap(), ringing.a.snap(), ("DialStatus", "CANCEL"))
            ringing.attempt.update(ring_end_epoch=_r3(end), outcome="cancelled: caller hung up",
                                   ring_seconds=_r3(end - ringing.start))
        s.mark(_QLEAVE, queue, c.snap(), c.uniqueid, int(at) - int(join))
        s.ev(evt.soft_hangup_request, c.snap(), 16)
        if ringing is not None:
            s.ev(evt.hangup, ringing.a.snap(), 0)
            s.ev(evt.device_state, ringing.who.interface, "NOT_INUSE")
        s.ev(evt.hangup, c.snap(), 0)
        s.mark(_CUSTDEV, -1)
        if ringing is not None:
            s.mark(_MEMBER, ringing.agent.ext, 1, None)
        truth["abandoned"] = True
        return self._finish(truth, end, "caller")

    def _connect(self, s: _Script, truth: Truth, c: Chan, ring: _Ring, join: float) -> _QueueLeg:
        """The member answers: DialEnd ANSWER, QueueCallerLeave, AgentConnect, both enter a bridge (a.ami)."""
        a, who = ring.a, ring.who
        a.state = UP
        s.chan("Newstate", a.snap())
        answered = s.ev(evt.dial, "DialEnd", c.snap(), a.snap(), ("DialStatus", "ANSWER"))
        ring.attempt.update(ring_end_epoch=_r3(answered), outcome="answered", ring_seconds=_r3(answered - ring.start))
        truth.update(answered_by=ring.agent.ext, answer_epoch=_r3(answered),
                     seconds_to_answer=_r3(answered - truth["arrival_epoch"]), final_agent=ring.agent.ext)
        s.chan("MusicOnHoldStop", c.snap())
        if s.noise:
            s.ev(evt.var_set, c.snap(), "MEMBERINTERFACE", who.interface)
            s.ev(evt.var_set, c.snap(), "MEMBERNAME", who.name)
        s.mark(_QLEAVE, who.queue, c.snap(), c.uniqueid, None)
        # AgentConnect HoldTime is whole seconds in the queue (time(NULL) - qe->start).
        hold_time = str(int(answered) - int(join))
        s.ev(evt.agent_event, "AgentConnect", c.snap(), a.snap(), who, ("HoldTime", hold_time),
             ("RingTime", str(int(answered - ring.start))))
        s.mark(_INCALL, ring.agent.ext, 1)
        b = self._bridge()
        s.ev(evt.bridge_event, "BridgeCreate", b.snap())
        b.channels = 1
        s.ev(evt.bridge_enter, b.snap(), a.snap())
        b.channels = 2
        s.ev(evt.bridge_enter, b.snap(), c.snap())
        if s.noise:
            s.ev(evt.var_set, a.snap(), "BRIDGEPEER", c.name)
            s.ev(evt.var_set, c.snap(), "BRIDGEPEER", a.name)
        tags = ["rona", "answered"] if len(truth["ring_attempts"]) > 1 else ["answered"]
        return _QueueLeg(truth=truth, c=c, a=a, b=b, agent=ring.agent, who=who, hold_time=hold_time,
                         answered=answered, tags=tags)

    def _complete(self, s: _Script, leg: _QueueLeg, reason: str, dest: Snap | None, at: float | None = None) -> None:
        """AgentComplete; TalkTime counts whole seconds from the answer."""
        talk = str(int((s.t if at is None else at) - leg.answered))
        s.ev(evt.agent_event, "AgentComplete", leg.c.snap(), dest, leg.who, ("HoldTime", leg.hold_time),
             ("TalkTime", talk), ("Reason", reason))
        s.mark(_INCALL, leg.agent.ext, 0)

    def _talk_and_end(self, s: _Script, leg: _QueueLeg) -> Truth:
        """Holds, maybe a transfer, then somebody hangs up."""
        rng, mix = self.rng, self.cfg.mix
        truth, tags = leg.truth, leg.tags
        n_holds = 0
        if rng.random() < mix.hold:
            n_holds = 2 if rng.random() < mix.second_hold else 1
        for i in range(n_holds):
            tags.append("hold")
            s.at(s.t + rng.uniform(4.0, 40.0))
            length = self._hold_length()
            start = s.ev(evt.hold, leg.a.snap(), "default")
            s.ev(evt.moh_start, leg.c.snap())
            s.at(start + length)
            if i == n_holds - 1 and rng.random() < mix.end_on_hold:
                by_agent = rng.random() < 0.5
                tags.append("ended_on_hold")
                truth["scenario"] = "_".join(tags)
                truth["ended_on_hold"] = True
                end = self._queue_hangup(s, leg, by_agent=by_agent, on_hold=True)
                truth["holds"].append(_hold(leg.agent.ext, start, end))
                self._reserve(leg.agent, end + rng.uniform(1.0, 5.0))
                return self._finish(truth, end, "agent" if by_agent else "caller")
            stop = s.chan("Unhold", leg.a.snap())
            s.chan("MusicOnHoldStop", leg.c.snap())
            truth["holds"].append(_hold(leg.agent.ext, start, stop))

        r = rng.random()
        if r < mix.blind:
            truth["scenario"] = "_".join([*tags, "blind_transfer"])
            return self._blind_transfer(s, leg)
        if r < mix.blind + mix.attended:
            truth["scenario"] = "_".join([*tags, "attended_transfer"])
            done = self._attended_transfer(s, leg)
            if done is not None:
                return done
            tags.append("attended_transfer_aborted")
        s.at(s.t + self._talk())
        by_agent = rng.random() < mix.agent_hangs_up
        if by_agent:
            tags.append("agent_hangup")
        truth["scenario"] = "_".join(tags)
        end = self._queue_hangup(s, leg, by_agent=by_agent, on_hold=False)
        self._reserve(leg.agent, end + rng.uniform(1.0, 5.0))
        return self._finish(truth, end, "agent" if by_agent else "caller")

    def _queue_hangup(self, s: _Script, leg: _QueueLeg, *, by_agent: bool, on_hold: bool) -> float:
        """End of a queue call in the agent's bridge (a.ami, b.ami, hold_hangup_*.ami)."""
        c, a, b = leg.c, leg.a, leg.b
        if by_agent:
            end = s.ev(evt.hangup_request, a.snap())
            if on_hold:
                self._complete(s, leg, "agent", a.snap())
            b.channels = 1
            s.ev(evt.bridge_leave, b.snap(), a.snap())
            b.channels = 0
            s.ev(evt.bridge_leave, b.snap(), c.snap())
            if on_hold:
                s.chan("MusicOnHoldStop", c.snap())
            s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
            s.ev(evt.soft_hangup_request, c.snap(), 16)
            if not on_hold:
                self._complete(s, leg, "agent", a.snap())
            s.ev(evt.hangup, a.snap(), 16)
            s.ev(evt.device_state, leg.who.interface, "NOT_INUSE")
            s.mark(_MEMBER, leg.agent.ext, 1, leg.who.queue)
            s.ev(evt.hangup, c.snap(), 16)
            s.mark(_CUSTDEV, -1)
            return end
        end = s.ev(evt.hangup_request, c.snap())
        self._complete(s, leg, "caller", a.snap())
        if on_hold:
            s.chan("MusicOnHoldStop", c.snap())
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), c.snap())
        s.ev(evt.soft_hangup_request, c.snap(), 16)
        if not on_hold:
            s.ev(evt.hangup, c.snap(), 16)
            s.mark(_CUSTDEV, -1)
        b.channels = 0
        s.ev(evt.bridge_leave, b.snap(), a.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
        s.ev(evt.hangup, a.snap(), 16)
        s.ev(evt.device_state, leg.who.interface, "NOT_INUSE")
        s.mark(_MEMBER, leg.agent.ext, 1, leg.who.queue)
        if on_hold:
            s.ev(evt.hangup, c.snap(), 16)
            s.mark(_CUSTDEV, -1)
        return end

    # ----------------------------------------------------------------- transfers

    def _target(self, at: float, want_answer: bool) -> tuple[_Agent | None, str, str]:
        """A tier-2 agent idle at ``at``, else the back-office phone (which never answers)."""
        picked = self.tier2_pool.pick(at, at) if want_answer or self.rng.random() < 0.5 else None
        if picked is None:
            return None, *self.back_office
        return picked[0], picked[0].ext, picked[0].name

    def _blind_transfer(self, s: _Script, leg: _QueueLeg) -> Truth:
        """REFER from the agent's phone (i.ami answered, j.ami never answered)."""
        rng, mix = self.rng, self.cfg.mix
        truth, c, a, b, agent, queue = leg.truth, leg.c, leg.a, leg.b, leg.agent, leg.who.queue
        s.at(s.t + rng.uniform(5.0, 60.0))
        answers = rng.random() < mix.blind_answered
        target, text, tname = self._target(s.t, answers)
        answers = answers and target is not None
        # The REFER arrives with a spurious Unhold (no Hold before it), as in every captured blind transfer.
        initiated = s.chan("Unhold", a.snap()) - 0.004
        s.ev(evt.blind_transfer, a.snap(), c.snap(), b.snap(), context="agents", extension=text)
        if rng.random() < 0.7:
            self._complete(s, leg, "transfer", a.snap())
            b.channels = 1
            s.ev(evt.bridge_leave, b.snap(), a.snap())
            c.context, c.exten, c.priority = "agents", text, 1
            if s.noise:
                s.ev(evt.new_exten, c.snap(), text, "Queue", f"{queue},t")
            b.channels = 0
            s.ev(evt.bridge_leave, b.snap(), c.snap())
            c.priority = 2
            if s.noise:
                s.ev(evt.new_exten, c.snap(), text, "Dial", f"PJSIP/{text},90,t")
            released = s.ev(evt.hangup, a.snap(), 16)
            s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
            s.ev(evt.device_state, leg.who.interface, "NOT_INUSE")
            s.mark(_MEMBER, agent.ext, 1, queue)
        else:
            # j.ami: the agent's channel goes first and AgentComplete comes without Dest* fields.
            b.channels = 1
            s.ev(evt.bridge_leave, b.snap(), a.snap())
            released = s.ev(evt.hangup, a.snap(), 16)
            s.ev(evt.device_state, leg.who.interface, "NOT_INUSE")
            s.mark(_MEMBER, agent.ext, 1, queue)
            self._complete(s, leg, "transfer", None, released)
            c.context, c.exten, c.priority = "agents", text, 1
            if s.noise:
                s.ev(evt.new_exten, c.snap(), text, "Queue", f"{queue},t")
            b.channels = 0
            s.ev(evt.bridge_leave, b.snap(), c.snap())
            c.priority = 2
            if s.noise:
                s.ev(evt.new_exten, c.snap(), text, "Dial", f"PJSIP/{text},90,t")
            s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
        self._reserve(agent, released + rng.uniform(1.0, 5.0))
        t = Chan(self._chan_name(f"PJSIP/{text}"), self._uniqueid(s.t), c.linkedid, state=DOWN, cid_num=text,
                 cid_name=tname, context="agents", exten="s")
        ring = self._dial_target(s, c, t, text)
        tr: dict[str, Any] = {
            "type": "blind",
            "method": "SIP REFER from agent phone",
            "from": agent.ext,
            "to": text,
            "initiated_epoch": _r3(initiated),
            "target_ring_epoch": _r3(ring),
            "transferer_released_epoch": _r3(released),
            "target_answered": answers,
            "target_answer_epoch": None,
        }
        truth["transfers"].append(tr)
        if not answers:
            # Nobody picks up; the caller gives up while the target still rings (j.ami).
            s.at(ring + rng.uniform(8.0, 45.0))
            end = s.ev(evt.hangup_request, c.snap(), 16)
            s.ev(evt.dial, "DialEnd", c.snap(), t.snap(), ("DialStatus", "CANCEL"))
            s.ev(evt.soft_hangup_request, c.snap(), 16)
            s.ev(evt.hangup, t.snap(), 16)
            s.ev(evt.hangup, c.snap(), 16)
            s.ev(evt.device_state, f"PJSIP/{text}", "NOT_INUSE")
            s.mark(_CUSTDEV, -1)
            if target is not None:
                self._reserve(target, end + 1.0)
            truth["abandoned"] = True
            truth["final_agent"] = None
            truth["notes"].append("caller hung up while the transfer target was still ringing")
            return self._finish(truth, end, "caller")
        assert target is not None
        s.at(ring + rng.uniform(2.0, 10.0))
        answered, b2 = self._answer_target(s, c, t)
        tr["target_answer_epoch"] = _r3(answered)
        truth["final_agent"] = text
        s.at(s.t + self._talk())
        by_target = rng.random() < mix.agent_hangs_up * 0.5
        end = self._dial_hangup(s, c, t, b2, by_target=by_target)
        self._reserve(target, end + rng.uniform(1.0, 5.0))
        return self._finish(truth, end, "agent" if by_target else "caller")

    def _dial_target(self, s: _Script, c: Chan, t: Chan, text: str) -> float:
        """Dial(PJSIP/<ext>) from the caller's channel (i.ami, n.ami); returns when it rings."""
        s.chan("Newchannel", t.snap())
        t.connect(c)
        t.exten = text
        if s.noise:
            s.ev(evt.new_exten, t.snap(), text, "AppDial", "(Outgoing Line)")
        s.chan("NewConnectedLine", t.snap())
        s.ev(evt.dial, "DialBegin", c.snap(), t.snap(), ("DialString", text))
        c.connect(t)
        s.chan("NewConnectedLine", c.snap())
        s.ev(evt.dial, "DialState", c.snap(), t.snap(), ("DialStatus", "RINGING"))
        t.state = RINGING
        ring = s.chan("Newstate", t.snap())
        s.ev(evt.device_state, f"PJSIP/{text}", "BUSY")
        return ring

    def _answer_target(self, s: _Script, c: Chan, t: Chan, *, caller_up: bool = True) -> tuple[float, Bridge]:
        """The dialled phone answers and both enter a new bridge (i.ami, n.ami)."""
        t.state = UP
        s.chan("Newstate", t.snap())
        t.exten = ""  # after the answer the callee's snapshot shows an empty Exten (agents,,1)
        answered = s.ev(evt.dial, "DialEnd", c.snap(), t.snap(), ("DialStatus", "ANSWER"))
        if not caller_up:
            c.state = UP
            s.chan("Newstate", c.snap())
        b = self._bridge()
        s.ev(evt.bridge_event, "BridgeCreate", b.snap())
        if s.noise:
            s.ev(evt.new_exten, t.snap(), "", "AppDial", "(Outgoing Line)")
        b.channels = 1
        s.ev(evt.bridge_enter, b.snap(), t.snap())
        b.channels = 2
        s.ev(evt.bridge_enter, b.snap(), c.snap())
        return answered, b

    def _dial_hangup(self, s: _Script, c: Chan, t: Chan, b: Bridge, *, by_target: bool) -> float:
        """End of a Dial()ed conversation (i.ami); the callee-first order is inferred, not captured."""
        first, second = (t, c) if by_target else (c, t)
        end = s.ev(evt.hangup_request, first.snap(), 16)
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), first.snap())
        b.channels = 0
        s.ev(evt.bridge_leave, b.snap(), second.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
        s.ev(evt.soft_hangup_request, c.snap(), 16)
        s.ev(evt.hangup, t.snap(), 16)
        s.ev(evt.device_state, f"PJSIP/{t.cid_num}", "NOT_INUSE")
        s.ev(evt.hangup, c.snap(), 16)
        s.mark(_CUSTDEV, -1)
        return end

    def _dtmf(self, s: _Script, a: Chan, digits: str) -> None:
        """Digits pressed on the agent's phone, 180 ms each, ~0.16 s apart, as baresip sent them (k.ami)."""
        for i, d in enumerate(digits):
            if i:
                s.at(s.t + 0.16 + self.rng.random() * 0.02)
            s.ev(evt.dtmf_begin, a.snap(), d)
            s.at(s.t + 0.177)
            s.ev(evt.dtmf_end, a.snap(), d, 180)

    def _attended_transfer(self, s: _Script, leg: _QueueLeg) -> Truth | None:
        """``*2`` + extension through a Local channel; completed by hanging up (k.ami) or aborted (l.ami).

        Returns the finished truth, or None when the consultation was aborted and the call goes on.
        """
        rng, mix = self.rng, self.cfg.mix
        truth, c, a, b, agent = leg.truth, leg.c, leg.a, leg.b, leg.agent
        s.at(s.t + rng.uniform(5.0, 60.0))
        completes = rng.random() < mix.attended_completed
        target, text, tname = self._target(s.t + 3.0, completes)
        completes = completes and target is not None
        star = s.t
        self._dtmf(s, a, "*2")
        s.ev(evt.hold, a.snap(), None)  # the *2 feature holds the caller: Hold without MusicClass
        moh_from = s.ev(evt.moh_start, c.snap())
        s.at(s.t + 0.98)
        self._dtmf(s, a, text)

        lid = c.linkedid
        base = f"Local/{text}@agents-{self._local:08x}"
        self._local += 1
        l1 = Chan(base + ";1", self._uniqueid(s.t), lid, state=DOWN, cid_num=evt.UNKNOWN, cid_name=evt.UNKNOWN,
                  context="agents", exten=text)
        s.chan("Newchannel", l1.snap())
        l2 = Chan(base + ";2", self._uniqueid(s.t), lid, state=RING, cid_num=evt.UNKNOWN, cid_name=evt.UNKNOWN,
                  context="agents", exten=text)
        s.chan("Newchannel", l2.snap())
        consult = self._bridge()
        s.ev(evt.bridge_event, "BridgeCreate", consult.snap())
        l2.cid_num, l2.cid_name = a.cid_num, a.cid_name
        s.ev(evt.new_callerid, l2.snap())
        s.ev(evt.local_bridge, l1.snap(), l2.snap(), "agents", text)
        if s.noise:
            s.ev(evt.new_exten, l2.snap(), text, "NoOp", f"Internal call to {text}")
            l2.priority = 2
            s.ev(evt.new_exten, l2.snap(), text, "Dial", f"PJSIP/{text},90,t")
        l2.priority = 2
        l1.connect(a)
        s.chan("NewConnectedLine", l1.snap())
        consult.channels = 1
        s.ev(evt.bridge_enter, consult.snap(), l1.snap())
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), a.snap())
        consult.channels = 2
        s.ev(evt.bridge_enter, consult.snap(), a.snap())
        a.cl_num, a.cl_name = evt.UNKNOWN, evt.UNKNOWN
        s.chan("NewConnectedLine", a.snap())
        t = Chan(self._chan_name(f"PJSIP/{text}"), self._uniqueid(s.t), lid, state=DOWN, cid_num=text,
                 cid_name=tname, context="agents", exten="s")
        s.chan("Newchannel", t.snap())
        t.connect(a)
        t.exten = text
        if s.noise:
            s.ev(evt.new_exten, t.snap(), text, "AppDial", "(Outgoing Line)")
        s.chan("NewConnectedLine", t.snap())
        s.ev(evt.dial, "DialBegin", l2.snap(), t.snap(), ("DialString", text))
        l2.connect(t)
        s.chan("NewConnectedLine", l2.snap())
        a.connect(t)
        s.chan("NewConnectedLine", a.snap())
        t.state = RINGING
        ring = s.chan("Newstate", t.snap())
        l1.cid_num, l1.cid_name = t.cid_num, t.cid_name
        l1.state = RINGING
        s.chan("Newstate", l1.snap())
        s.ev(evt.new_callerid, l1.snap())
        s.ev(evt.device_state, f"PJSIP/{text}", "BUSY")
        s.ev(evt.dial, "DialState", None, l1.snap(), ("DialStatus", "RINGING"))
        s.ev(evt.dial, "DialState", l2.snap(), t.snap(), ("DialStatus", "RINGING"))
        local_dev = f"Local/{text}@agents"
        s.ev(evt.device_state, local_dev, "INUSE")
        tr: dict[str, Any] = {
            "type": "attended",
            "method": "DTMF feature code *2 + extension (features.conf atxfer)",
            "from": agent.ext,
            "to": text,
            "initiated_epoch": _r3(star - 0.017),
            "target_ring_epoch": _r3(ring),
            "target_answered": completes,
            "target_answer_epoch": None,
            "completed": completes,
            "completed_epoch": None,
            "aborted": not completes,
            "aborted_epoch": None,
            "caller_on_moh_by_transfer_from_epoch": _r3(moh_from),
        }
        truth["transfers"].append(tr)

        if not completes:
            s.at(ring + rng.uniform(5.0, 12.0))
            aborted = s.t - 0.014
            self._dtmf(s, a, "*1")
            consult.channels = 1
            s.ev(evt.bridge_leave, consult.snap(), a.snap())
            b.channels = 2
            s.ev(evt.bridge_enter, b.snap(), a.snap())
            moh_until = s.chan("MusicOnHoldStop", c.snap())
            s.chan("Unhold", a.snap())
            consult.channels = 0
            s.ev(evt.bridge_leave, consult.snap(), l1.snap())
            s.ev(evt.bridge_event, "BridgeDestroy", consult.snap())
            s.ev(evt.hangup_request, l2.snap(), 16)
            s.ev(evt.hangup, l1.snap(), 16)
            s.ev(evt.device_state, local_dev, "NOT_INUSE")
            ring_end = s.ev(evt.dial, "DialEnd", l2.snap(), t.snap(), ("DialStatus", "CANCEL"))
            s.ev(evt.hangup, t.snap(), 16)
            s.ev(evt.soft_hangup_request, l2.snap(), 16)
            s.ev(evt.hangup, l2.snap(), 16)
            s.ev(evt.device_state, f"PJSIP/{text}", "NOT_INUSE")
            s.ev(evt.device_state, local_dev, "NOT_INUSE")
            s.at(s.t + 0.4)
            a.connect(c)
            s.chan("NewConnectedLine", a.snap())
            tr.update(aborted_epoch=_r3(aborted), target_ring_end_epoch=_r3(ring_end),
                      abort_method="DTMF *1 (atxferabort) while target still ringing",
                      caller_on_moh_by_transfer_until_epoch=_r3(moh_until),
                      caller_on_moh_by_transfer_seconds=_r3(moh_until - moh_from))
            if target is not None:
                self._reserve(target, ring_end + 1.0)
            return None

        assert target is not None
        s.at(ring + rng.uniform(2.0, 9.0))
        t.state = UP
        s.chan("Newstate", t.snap())
        t.exten = ""
        answered = s.ev(evt.dial, "DialEnd", l2.snap(), t.snap(), ("DialStatus", "ANSWER"))
        l2.state = UP
        s.chan("Newstate", l2.snap())
        b3 = self._bridge()
        s.ev(evt.bridge_event, "BridgeCreate", b3.snap())
        l1.state = UP
        s.chan("Newstate", l1.snap())
        s.ev(evt.dial, "DialEnd", None, l1.snap(), ("DialStatus", "ANSWER"))
        s.ev(evt.device_state, local_dev, "INUSE")
        s.ev(evt.device_state, local_dev, "INUSE")
        if s.noise:
            s.ev(evt.new_exten, t.snap(), "", "AppDial", "(Outgoing Line)")
        b3.channels = 1
        s.ev(evt.bridge_enter, b3.snap(), t.snap())
        b3.channels = 2
        s.ev(evt.bridge_enter, b3.snap(), l2.snap())
        tr["target_answer_epoch"] = _r3(answered)

        # The agent hangs up: that completes the transfer (k.ami), it is not a hang-up on the caller.
        s.at(s.t + rng.uniform(3.0, 15.0))
        done = s.ev(evt.hangup_request, a.snap())
        consult.channels = 1
        s.ev(evt.bridge_leave, consult.snap(), a.snap())
        s.ev(evt.bridge_merge, b.snap(), consult.snap())
        consult.channels = 0
        s.ev(evt.bridge_leave, consult.snap(), l1.snap())
        b.channels = 2
        s.ev(evt.bridge_enter, b.snap(), l1.snap())
        moh_until = s.chan("MusicOnHoldStop", c.snap())
        s.ev(evt.attended_transfer, orig_transferer=a.snap(), orig_bridge=b.snap(), second_transferer=a.snap(),
             second_bridge=consult.snap(), transferee=c.snap(), target=None, dest_bridge=b.uniqueid)
        l1.connect(c)
        s.chan("NewConnectedLine", l1.snap())
        self._complete(s, leg, "transfer", a.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", consult.snap())
        c.connect(t)
        s.chan("NewConnectedLine", c.snap())
        s.ev(evt.hangup, a.snap(), 16)
        s.ev(evt.device_state, leg.who.interface, "NOT_INUSE")
        s.mark(_MEMBER, agent.ext, 1, leg.who.queue)
        t.connect(c)
        s.chan("NewConnectedLine", t.snap())
        self._reserve(agent, done + rng.uniform(1.0, 5.0))
        tr.update(completed_epoch=_r3(done), completion_method="transferer (agent) hung up after consulting",
                  caller_on_moh_by_transfer_until_epoch=_r3(moh_until),
                  caller_on_moh_by_transfer_seconds=_r3(moh_until - moh_from))

        # Local optimisation swaps the target into the caller's bridge ~0.4 s later.
        s.at(s.t + 0.41)
        ident = self._local_opt
        self._local_opt += 1
        s.ev(evt.local_optimization_begin, l1.snap(), l2.snap(), t.snap(), dest_uniqueid=l2.uniqueid, ident=ident)
        b3.channels = 1
        s.ev(evt.bridge_leave, b3.snap(), t.snap())
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), l1.snap())
        b.channels = 2
        s.ev(evt.bridge_enter, b.snap(), t.snap(), l1.uniqueid)
        l2.cid_num, l2.cid_name = c.cid_num, c.cid_name
        s.ev(evt.new_callerid, l2.snap())
        s.ev(evt.local_optimization_end, l1.snap(), l2.snap(), ident, False)
        b3.channels = 0
        s.ev(evt.bridge_leave, b3.snap(), l2.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", b3.snap())
        s.ev(evt.soft_hangup_request, l2.snap(), 16)
        s.ev(evt.hangup_request, l1.snap(), 16)
        s.ev(evt.hangup, l2.snap(), 16)
        s.ev(evt.hangup, l1.snap(), 16)
        s.ev(evt.device_state, local_dev, "NOT_INUSE")
        s.ev(evt.device_state, local_dev, "NOT_INUSE")
        truth["final_agent"] = text

        s.at(s.t + self._talk())
        by_target = rng.random() < mix.agent_hangs_up * 0.5
        first, second = (t, c) if by_target else (c, t)
        end = s.ev(evt.hangup_request, first.snap())
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), first.snap())
        s.ev(evt.soft_hangup_request, c.snap(), 16)
        b.channels = 0
        s.ev(evt.bridge_leave, b.snap(), second.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
        s.ev(evt.hangup, t.snap(), 16)
        s.ev(evt.device_state, f"PJSIP/{text}", "NOT_INUSE")
        s.ev(evt.hangup, c.snap(), 16)
        s.mark(_CUSTDEV, -1)
        self._reserve(target, end + rng.uniform(1.0, 5.0))
        return self._finish(truth, end, "agent" if by_target else "caller")

    # ----------------------------------------------------------------- direct and outbound calls

    def _direct_call(self, s: _Script, arrival: float) -> Truth | None:
        """A customer dials a tier-2 extension directly (n.ami); None when nobody is idle."""
        rng = self.rng
        picked = self.tier2_pool.pick(arrival, arrival)
        if picked is None:
            return None
        agent = picked[0]
        ext = agent.ext
        num, cname = self._customer()
        truth = self._truth(number=num, dialed=ext, queue=None, arrival=arrival, scenario="direct")
        s.at(arrival + 0.002 + rng.random() * 0.001)
        uid = self._uniqueid(s.t)
        c = Chan(self._chan_name(CUSTOMER_DEVICE), uid, uid, state=RING, cid_num=num, cid_name=cname,
                 context="from-customer", exten=ext)
        s.chan("Newchannel", c.snap())
        if s.noise:
            s.ev(evt.new_exten, c.snap(), ext, "NoOp", f"Direct call to {ext} from {num}")
            c.priority = 2
            s.ev(evt.new_exten, c.snap(), ext, "Dial", f"PJSIP/{ext},60,tr")
        c.priority = 2
        t = self._new_agent_leg(agent, uid, s.t)
        s.chan("Newchannel", t.snap())
        t.connect(c)
        t.exten = ext
        if s.noise:
            s.ev(evt.new_exten, t.snap(), ext, "AppDial", "(Outgoing Line)")
        s.chan("NewConnectedLine", t.snap())
        s.ev(evt.dial, "DialBegin", c.snap(), t.snap(), ("DialString", ext))
        c.connect(t)
        s.chan("NewConnectedLine", c.snap())
        s.mark(_CUSTDEV, 1)
        t.state = RINGING
        ring = s.chan("Newstate", t.snap())
        s.ev(evt.device_state, f"PJSIP/{ext}", "BUSY")
        s.ev(evt.dial, "DialState", c.snap(), t.snap(), ("DialStatus", "RINGING"))
        s.at(ring + self._answer_delay())
        answered, b = self._answer_target(s, c, t, caller_up=False)
        truth["ring_attempts"].append({"agent": ext, "ring_start_epoch": _r3(ring), "ring_end_epoch": _r3(answered),
                                       "outcome": "answered", "ring_seconds": _r3(answered - ring)})
        truth.update(answered_by=ext, answer_epoch=_r3(answered), seconds_to_answer=_r3(answered - arrival),
                     final_agent=ext)
        if rng.random() < self.cfg.mix.hold:
            s.at(s.t + rng.uniform(4.0, 40.0))
            start = s.ev(evt.hold, t.snap(), "default")
            s.ev(evt.moh_start, c.snap())
            s.at(start + self._hold_length())
            stop = s.chan("Unhold", t.snap())
            s.chan("MusicOnHoldStop", c.snap())
            truth["holds"].append(_hold(ext, start, stop))
            truth["scenario"] = "direct_hold"
        s.at(s.t + self._talk())
        by_agent = rng.random() < self.cfg.mix.agent_hangs_up
        end = self._dial_hangup(s, c, t, b, by_target=by_agent)
        self._reserve(agent, end + rng.uniform(1.0, 5.0))
        return self._finish(truth, end, "agent" if by_agent else "caller")

    def _outbound_call(self, s: _Script, arrival: float) -> Truth | None:
        """A tier-2 agent calls a customer back (o.ami); None when nobody is idle."""
        rng = self.rng
        picked = self.tier2_pool.pick(arrival, arrival)
        if picked is None:
            return None
        agent = picked[0]
        ext = agent.ext
        num, _ = self._customer()
        truth = self._truth(number=ext, dialed=num, queue=None, arrival=arrival, scenario="outbound",
                            direction="outbound")
        truth["plan"] = {"outbound": True, "number": num, "agent": ext}
        port = str(6000 + 2 * int(num[-3:]))
        dial_string = f"customer/sip:{num}@127.0.0.1:{port}"
        s.at(arrival + 0.002 + rng.random() * 0.001)
        uid = self._uniqueid(s.t)
        a = Chan(self._chan_name(f"PJSIP/{ext}"), uid, uid, state=RING, cid_num=ext, cid_name=agent.name,
                 context="agents", exten=num)
        s.chan("Newchannel", a.snap())
        if s.noise:
            s.ev(evt.new_exten, a.snap(), num, "NoOp", f"Outbound callback to {num}")
            a.priority = 2
            s.ev(evt.new_exten, a.snap(), num, "Set", f"CPORT={port}")
            a.priority = 3
            s.ev(evt.new_exten, a.snap(), num, "Dial", f"PJSIP/{dial_string},60,T")
        a.priority = 3
        c = Chan(self._chan_name(CUSTOMER_DEVICE), self._uniqueid(s.t), uid, state=DOWN, cid_num=evt.UNKNOWN,
                 cid_name=evt.UNKNOWN, context="from-customer", exten="s")
        s.chan("Newchannel", c.snap())
        c.cid_num = num
        c.connect(a)
        c.exten = num
        if s.noise:
            s.ev(evt.new_exten, c.snap(), num, "AppDial", "(Outgoing Line)")
        s.ev(evt.new_callerid, c.snap())
        s.chan("NewConnectedLine", c.snap())
        s.ev(evt.dial, "DialBegin", a.snap(), c.snap(), ("DialString", dial_string))
        c.state = RINGING
        ring = s.chan("Newstate", c.snap())
        s.mark(_CUSTDEV, 1)
        a.connect(c)
        s.chan("NewConnectedLine", a.snap())
        s.ev(evt.device_state, f"PJSIP/{ext}", "BUSY")
        s.ev(evt.dial, "DialState", a.snap(), c.snap(), ("DialStatus", "RINGING"))
        s.at(ring + rng.uniform(2.0, 14.0))
        c.state = UP
        s.chan("Newstate", c.snap())
        c.exten = ""
        answered = s.ev(evt.dial, "DialEnd", a.snap(), c.snap(), ("DialStatus", "ANSWER"))
        a.state = UP
        s.chan("Newstate", a.snap())
        b = self._bridge()
        s.ev(evt.bridge_event, "BridgeCreate", b.snap())
        if s.noise:
            s.ev(evt.new_exten, c.snap(), "", "AppDial", "(Outgoing Line)")
        b.channels = 1
        s.ev(evt.bridge_enter, b.snap(), c.snap())
        b.channels = 2
        s.ev(evt.bridge_enter, b.snap(), a.snap())
        truth["ring_attempts"].append({"agent": f"c{num}", "ring_start_epoch": _r3(ring),
                                       "outcome": "answered by customer"})
        truth.update(answered_by=f"c{num} (customer)", answer_epoch=_r3(answered),
                     seconds_to_answer=_r3(answered - arrival), final_agent=ext)
        s.at(s.t + self._talk())
        by_agent = rng.random() < self.cfg.mix.agent_hangs_up
        first, second = (a, c) if by_agent else (c, a)
        end = s.ev(evt.hangup_request, first.snap(), 16)
        b.channels = 1
        s.ev(evt.bridge_leave, b.snap(), first.snap())
        if not by_agent:
            s.ev(evt.hangup, c.snap(), 16)
        b.channels = 0
        s.ev(evt.bridge_leave, b.snap(), second.snap())
        s.ev(evt.bridge_event, "BridgeDestroy", b.snap())
        if by_agent:
            s.ev(evt.hangup, c.snap(), 16)
        else:
            s.ev(evt.soft_hangup_request, a.snap(), 16)
        s.ev(evt.hangup, a.snap(), 16)
        s.mark(_CUSTDEV, -1)
        s.ev(evt.device_state, f"PJSIP/{ext}", "NOT_INUSE")
        self._reserve(agent, end + rng.uniform(1.0, 5.0))
        return self._finish(truth, end, "agent" if by_agent else "customer")


def _hold(by: str, start: float, end: float) -> Truth:
    seconds = end - start
    return {"by": by, "start_epoch": _r3(start), "end_epoch": _r3(end), "seconds": _r3(seconds),
            "over_60s": seconds > 60.0}


def _interval(agent: str, queue: str, layer: str, state: str, *, reason: str | None = None, start: float,
              end: float) -> Truth:
    return {"agent": agent, "queue": queue, "layer": layer, "state": state, "reason": reason,
            "start_epoch": _r3(start), "end_epoch": _r3(end), "seconds": _r3(end - start)}


# --------------------------------------------------------------------- public entry points


def generate_day(
    seed: int,
    agents: int,
    calls_per_hour: float,
    hours: float,
    start_epoch: float,
    *,
    on_call: Callable[[Truth], None] | None = None,
    **options: Any,
) -> Iterator[Event]:
    """Yield ``(timestamp, headers)`` for a whole synthetic day, in timestamp order.

    Args:
        seed: the same seed gives the same events.
        agents: queue agents.
        calls_per_hour: mean arrival rate.
        hours: length of the day.
        start_epoch: Unix time of the first event.
        on_call: receives each call's ground truth (truth-file format) when it is planned.
        **options: further :class:`DayConfig` fields (``queues``, ``tier2``, ``noise``, ``mix``).
    """
    config = DayConfig(seed=seed, agents=agents, calls_per_hour=calls_per_hour, hours=hours,
                       start_epoch=start_epoch, **options)
    return DayGenerator(config, on_call).events()


def capture_preamble(start_epoch: float) -> bytes:
    """Banner, login response, ``FullyBooted`` and ``SuccessfulAuth``: how every real capture starts."""
    return (
        f"{BANNER}\r\n".encode("ascii")
        + encode_frame([("Response", "Success"), ("ActionID", "capture-login-1"),
                        ("Message", "Authentication accepted")])
        + encode_frame([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", "3600"),
                        ("LastReload", "3600"), ("Status", "Fully Booted")])
        + encode_frame([("Event", "SuccessfulAuth"), ("Privilege", "security,all"),
                        ("Timestamp", evt.stamp(start_epoch)), ("EventTV", _event_tv(start_epoch)),
                        ("Severity", "Informational"), ("Service", "AMI"), ("EventVersion", "1"),
                        ("AccountID", "capture"), ("SessionID", "0x7f0000000001"),
                        ("LocalAddress", "IPV4/TCP/127.0.0.1/5038"),
                        ("RemoteAddress", "IPV4/TCP/127.0.0.1/40000"), ("UsingPassword", "0"),
                        ("SessionTV", _event_tv(start_epoch))])
    )


def _event_tv(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """What :func:`write_capture` wrote."""

    events: int
    calls: int
    first_epoch: float
    last_epoch: float
    bytes: int


def write_capture(config: DayConfig, capture_path: str | Path, truth_path: str | Path | None = None) -> CaptureSummary:
    """Write a day as a capture file (banner, login, events; CRLF framing) and its truth JSON.

    Both files are streamed: memory stays flat however long the day.
    """
    capture_path = Path(capture_path)
    truth_file = open(truth_path, "w", encoding="utf-8") if truth_path is not None else None  # noqa: SIM115
    calls = 0

    def on_call(truth: Truth) -> None:
        nonlocal calls
        if truth_file is not None:
            truth_file.write(("\n  " if calls == 0 else ",\n  ") + json.dumps(truth, ensure_ascii=False))
        calls += 1

    gen = DayGenerator(config, on_call)
    if truth_file is not None:
        head = {
            "scenario": "generated",
            "description": f"synthetic call-centre day: {config.agents} agents, {config.calls_per_hour:g} calls/h, "
            f"{config.hours:g} h, seed {config.seed}",
            "trace_file": capture_path.name,
            "generator": asdict(config),
            "assumptions": {"ring_seconds": 3.0, "three_rings_seconds": 9.0, "hold_violation_over_seconds": 60,
                            "target_call_seconds": 180, "max_call_seconds": 300},
            "endpoints": {"queue_agents": f"1001-{1000 + config.agents}",
                          "tier2": [a.ext for a in gen.tier2], "back_office": gen.back_office[0],
                          "lines": gen.lines},
        }
        text = json.dumps(head, ensure_ascii=False, indent=1)
        truth_file.write(text[:-2] + ',\n "calls": [')
    n = 0
    size = 0
    first = last = config.start_epoch
    try:
        with capture_path.open("wb") as out:
            pre = capture_preamble(config.start_epoch)
            out.write(pre)
            size += len(pre)
            buf: list[bytes] = []
            for ts, headers in gen.events():
                if n == 0:
                    first = ts
                last = ts
                buf.append(encode_frame(headers))
                n += 1
                if len(buf) >= 2048:
                    chunk = b"".join(buf)
                    out.write(chunk)
                    size += len(chunk)
                    buf.clear()
            chunk = b"".join(buf)
            out.write(chunk)
            size += len(chunk)
        if truth_file is not None:
            agents = json.dumps(gen.agents_truth(), ensure_ascii=False)
            truth_file.write(f"\n ],\n \"clock\": {{\"capture_start_epoch\": {first}, \"capture_end_epoch\": {last}}},"
                             f"\n \"agents\": {agents}\n}}\n")
    finally:
        if truth_file is not None:
            truth_file.close()
    return CaptureSummary(events=n, calls=calls, first_epoch=first, last_epoch=last, bytes=size)
