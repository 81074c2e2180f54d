"""``pbx-bridge bench``: throughput, latency, memory and replay speed, measured on this machine.

Theory of operation
-------------------
Every figure comes from one invocation on one machine and is printed to stdout; nothing here
is a pass/fail test (the smoke test only checks that the lines are printed). Other work on the
machine moves the figures, so throughput and latency are medians of ``--repeat`` runs, and the
receiver's CPU time per event is printed next to each rate (less sensitive to that noise).

* **Traffic.** A generated call-centre day (:func:`~pbx_bridge.emulator.generate_day`, noise on:
  ``Newexten``, ``VarSet``, ``DeviceStateChange``… as a real dialplan writes them) is encoded
  once, in the parent, into the bytes Asterisk would write. A *sender process*
  (``multiprocessing`` spawn, so it never shares the receiver's core) listens on loopback,
  answers the login and the actions a client sends (``CoreShowChannels``, ``QueueStatus``,
  ``Ping``) and, on cue, writes the stream as fast as the socket takes it, or paced.
* **Throughput.** The same stream goes, in alternating runs, to (1) bare panoramisk: the stock
  ``Manager`` with its default ``AMIProtocol`` and ``register_event('*', cb)``, ``cb`` an empty
  sync function; (2) the whole daemon (:class:`~pbx_bridge.daemon.Daemon`: our protocol → parser
  → engine → SQLite store → Prometheus metrics → hub, with an MQTT-encoding hub subscriber and a
  wallboard SSE client attached) with the frame parser as it was before the optimisation (the
  *plain path*: a verbatim copy below, every header of every frame parsed); (3) the whole
  daemon as shipped (the parser skims what the engine reads by name only). A run starts when the
  sender is told to go and ends when a ``Ping`` sent after the last byte is answered (so
  panoramisk has handled every event before it) and, for the daemon, when the engine has applied
  every event and the store has committed every record.
* **Latency.** The sender paces the stream (default 10,000 events/s: 10x a busy PBX) and writes
  into each event's ``Timestamp`` the wall-clock time at which it writes it (one stamp per
  0.5 ms batch, taken before the write). A hub subscriber notes ``time.time()`` when a
  ``call_event``, ``agent_state`` or ``record`` message reaches it and subtracts the message's
  ``ts`` (a record's ``ended_at``, rounded down to the millisecond, which can only add to the
  figure): same host, same clock, so this is arrival → parse → engine → hub, queueing included.
* **Memory.** In a fresh process, lean synthetic calls (the answered queue call of the real
  capture ``a.ami``, its engine events only, fresh ids per call) are fed straight into a
  tracker; VmRSS from ``/proc/self/status`` after ``gc.collect()`` at 0, ``calls/10`` and ``calls``.
* **Replay.** A whole generated day is streamed through ``encode_frame`` into the parser and the
  engine chunk by chunk (no 800 MB file), timing only parse → engine, as ``pbx-bridge replay``
  runs a capture; speed = simulated span ÷ that time.

The last line is ``ratio: R``: full-pipeline events/s ÷ bare-panoramisk events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from prometheus_client import CollectorRegistry

from pbx_bridge.ami.connection import BridgeProtocol, engine_parser
from pbx_bridge.ami.events import AmiEvent, EventDecoder
from pbx_bridge.ami.frames import (
    BANNER_PREFIX,
    TERMINATOR,
    Banner,
    Frame,
    FrameParser,
    ParserStats,
    encode_frame,
)
from pbx_bridge.ami.frames import _parse_lines as _plain_parse_lines
from pbx_bridge.config import Settings, load_settings
from pbx_bridge.daemon import Daemon
from pbx_bridge.emulator.generator import capture_preamble, generate_day
from pbx_bridge.engine.tracker import NAME_ONLY_EVENTS, CallTracker
from pbx_bridge.hub import Hub
from pbx_bridge.mqtt.publisher import encode as mqtt_payload
from pbx_bridge.replay import build_tracker
from pbx_bridge.service import make_store

HOST = "127.0.0.1"
USER = "bench"
SECRET = "bench-only-0123456789"  # noqa: S105 - the loopback sender accepts any login
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
BLAST_CHUNK = 1 << 16
PACE_TICK_S = 0.0005
RUN_TIMEOUT_S = 600.0
SECTIONS = ("parsers", "throughput", "latency", "replay", "memory")
REPLAY_START = 1_795_000_000.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to measure and how much of it.

    Attributes:
        events: events per throughput run (the latency runs draw from the same stream).
        calls: finished calls fed to the engine for the memory curve (checkpoints 0, calls/10, calls).
        repeat: runs per throughput mode and latency runs (medians are printed).
        rate: latency runs: events per second the sender paces at.
        latency_s: latency runs: seconds of paced traffic per run.
        agents: agents of the generated centre (stream and replayed day).
        calls_per_hour: its arrival rate (8 calls per agent-hour by default).
        hours: length of the replayed day.
        seed: generator seed.
        quick: tiny sizes, a smoke run of a few seconds (its figures mean nothing).
        sections: which measurements to run (comma-separated subset of :data:`SECTIONS`).
    """

    events: int = 150_000
    calls: int = 1_000_000
    repeat: int = 5
    rate: float = 10_000.0
    latency_s: float = 5.0
    agents: int = 500
    calls_per_hour: float = 4_000.0
    hours: float = 8.0
    seed: int = 1
    quick: bool = False
    sections: str = ",".join(SECTIONS)

    def effective(self) -> BenchOptions:
        """The sizes to run: these, or the smoke sizes with ``quick``."""
        if not self.quick:
            return self
        return BenchOptions(
            events=min(self.events, 4_000),
            calls=min(self.calls, 2_000),
            repeat=1,
            rate=self.rate,
            latency_s=min(self.latency_s, 0.3),
            agents=min(self.agents, 20),
            calls_per_hour=min(self.calls_per_hour, 400.0),
            hours=min(self.hours, 0.25),
            seed=self.seed,
            quick=True,
            sections=self.sections,
        )

    def wants(self, section: str) -> bool:
        return section in {s.strip() for s in self.sections.split(",")}


@dataclass(slots=True)
class RunResult:
    events: int
    seconds: float
    cpu_s: float
    note: str = ""
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _out(line: str) -> None:
    print(line, flush=True)


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


# ============================================================================ traffic


def build_stream(opts: BenchOptions, start_epoch: float) -> tuple[bytes, int, int]:
    """The first ``opts.events`` events of a generated day as Asterisk writes them: (bytes, events, noise)."""
    parts: list[bytes] = []
    noise = 0
    for _ts, headers in generate_day(opts.seed, opts.agents, opts.calls_per_hour, 24.0 * 7, start_epoch):
        parts.append(encode_frame(headers))
        if headers.get("Event", "") in NAME_ONLY_EVENTS:
            noise += 1
        if len(parts) >= opts.events:
            break
    return b"".join(parts), len(parts), noise


# ---------------------------------------------------------------------------- the sender process


@dataclass(slots=True)
class _Job:
    mode: str  # "blast" or "paced"
    rate: float
    count: int


def _sender_main(conn: Connection) -> None:
    """The fake Asterisk: one listening socket, driven by the parent over ``conn``."""
    srv = socket.create_server((HOST, 0))
    conn.send(srv.getsockname()[1])
    blob = b""
    paced: list[tuple[bytes, bytes | None]] | None = None
    while True:
        cmd = conn.recv()
        if cmd[0] == "load":
            blob = conn.recv_bytes()
            paced = None
        elif cmd[0] == "serve":
            job = _Job(cmd[1], cmd[2], cmd[3])
            if job.mode == "paced" and paced is None:
                paced = _split_for_pacing(blob)
            _serve_one(conn, srv, blob, paced if job.mode == "paced" else None, job)
        elif cmd[0] == "quit":
            srv.close()
            return


def _split_for_pacing(blob: bytes) -> list[tuple[bytes, bytes | None]]:
    """Each frame cut around its ``Timestamp`` value, so the send time can be written into it."""
    out: list[tuple[bytes, bytes | None]] = []
    key = b"\r\nTimestamp: "
    for frame in blob.split(TERMINATOR):
        if not frame:
            continue
        i = frame.find(key)
        if i < 0:
            out.append((frame + TERMINATOR, None))
            continue
        j = frame.find(b"\r\n", i + len(key))
        tail = (frame[j:] if j >= 0 else b"") + TERMINATOR
        out.append((frame[: i + len(key)], tail))
    return out


def _serve_one(
    conn: Connection, srv: socket.socket, blob: bytes, paced: list[tuple[bytes, bytes | None]] | None, job: _Job
) -> None:
    sock, _ = srv.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lock = threading.Lock()
    sock.sendall(BANNER)
    buf = bytearray()
    while TERMINATOR not in buf:
        data = sock.recv(65536)
        if not data:
            sock.close()
            return
        buf += data
    block, _, rest = bytes(buf).partition(TERMINATOR)
    aid = _header(block, b"ActionID")
    sock.sendall(
        _frame([("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")])
        + _frame([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", "1"), ("Status", "Fully Booted")])
    )
    replies = threading.Thread(target=_answer_actions, args=(sock, lock, bytearray(rest)), daemon=True)
    replies.start()
    conn.send(("ready",))
    if conn.recv()[0] == "go":
        t0 = time.perf_counter()
        sent = _send_paced(sock, lock, paced[: job.count], job.rate) if paced else _blast(sock, lock, blob)
        conn.send(("sent", sent, time.perf_counter() - t0))
        conn.recv()  # "close"
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    replies.join(timeout=5)


def _blast(sock: socket.socket, lock: threading.Lock, blob: bytes) -> int:
    view = memoryview(blob)
    start = 0
    while start < len(blob):
        end = blob.find(TERMINATOR, start + BLAST_CHUNK)  # whole frames per write
        end = len(blob) if end < 0 else end + len(TERMINATOR)
        with lock:
            sock.sendall(view[start:end])
        start = end
    return blob.count(TERMINATOR)


def _send_paced(
    sock: socket.socket, lock: threading.Lock, frames: list[tuple[bytes, bytes | None]], rate: float
) -> int:
    n = len(frames)
    sent = 0
    t0 = time.time()
    while sent < n:
        now = time.time()
        due = min(n, int((now - t0) * rate) + 1)
        if due > sent:
            stamp = b"%.6f" % now
            parts: list[bytes] = []
            for head, tail in frames[sent:due]:
                if tail is None:
                    parts.append(head)
                else:
                    parts += (head, stamp, tail)
            with lock:
                sock.sendall(b"".join(parts))
            sent = due
        time.sleep(PACE_TICK_S)
    return sent


def _answer_actions(sock: socket.socket, lock: threading.Lock, buf: bytearray) -> None:
    """Answer the client's actions like Asterisk, between whole frames of the stream."""
    while True:
        while TERMINATOR in buf:
            end = buf.index(TERMINATOR)
            block = bytes(buf[:end])
            del buf[: end + len(TERMINATOR)]
            reply = _reply(block)
            if reply:
                with lock:
                    sock.sendall(reply)
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        buf += data


def _reply(block: bytes) -> bytes:
    action = _header(block, b"Action").lower()
    aid = _header(block, b"ActionID")
    if action == "ping":
        now = f"{time.time():.6f}"
        return _frame([("Response", "Success"), ("ActionID", aid), ("Ping", "Pong"), ("Timestamp", now)])
    if action in ("coreshowchannels", "queuestatus"):
        done = "CoreShowChannelsComplete" if action == "coreshowchannels" else "QueueStatusComplete"
        return _frame(
            [("Response", "Success"), ("ActionID", aid), ("EventList", "start"), ("Message", "Will follow")]
        ) + _frame([("Event", done), ("ActionID", aid), ("EventList", "Complete"), ("ListItems", "0")])
    if not action:
        return b""
    return _frame([("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")])


def _header(block: bytes, key: bytes) -> str:
    for line in block.split(b"\r\n"):
        k, sep, v = line.partition(b": ")
        if sep and k.lower() == key.lower():
            return v.decode("utf-8", "replace").strip()
    return ""


def _frame(headers: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"


class Sender:
    """The parent's handle on the sender process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sender_main, args=(child,), name="pbx-bridge-bench-sender", daemon=True)
        self.proc.start()
        child.close()
        self.port: int = self.conn.recv()

    def load(self, blob: bytes) -> None:
        self.conn.send(("load",))
        self.conn.send_bytes(blob)

    def serve(self, mode: str, rate: float = 0.0, count: int = 0) -> None:
        self.conn.send(("serve", mode, rate, count))

    def send(self, command: str) -> None:
        self.conn.send((command,))

    async def recv(self, timeout: float = RUN_TIMEOUT_S) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.conn.poll():
            if loop.time() > deadline:
                raise TimeoutError("the sender process did not answer")
            await asyncio.sleep(0.002)
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("quit",))
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self.conn.close()


# ============================================================================ the plain path (before)


class PlainFrameParser:
    """The AMI parser as it was before the optimisation (its logic verbatim), for the before/after figure."""

    def __init__(self, max_frame_bytes: int = 1 << 20) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.stats = ParserStats()
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Frame | Banner]:
        self.stats.bytes_in += len(data)
        self._buf += data
        out: list[Frame | Banner] = []
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
                self._emit(bytes(buf[start:end]), out)
            start = end + 4
        del buf[:start]
        if len(buf) > self.max_frame_bytes + len(TERMINATOR) - 1:
            if not self._skipping:
                self.stats.oversize += 1
            self._skipping = True
            del buf[: len(buf) - 3]
        return out

    def _emit(self, block: bytes, out: list[Frame | Banner]) -> None:
        block = block.strip(b"\r\n")
        if not block:
            return
        headers = _plain_parse_block(block, self.stats)
        if "Event" in headers or "Response" in headers:
            self.stats.frames += 1
            out.append(Frame(headers))
        else:
            self.stats.garbage += 1


def _plain_parse_block(block: bytes, stats: ParserStats) -> dict[str, str]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        stats.decode_errors += 1
        text = block.decode("utf-8", "replace")
    lines = text.split("\r\n")
    try:
        headers = dict(line.split(": ", 1) for line in lines)
    except ValueError:
        return _plain_parse_lines(lines, stats)
    if len(headers) != len(lines):
        return _plain_parse_lines(lines, stats)
    return headers


class PlainProtocol(BridgeProtocol):
    """``BridgeProtocol`` with the parser it had before the optimisation: every frame parsed in full."""

    @staticmethod
    def _new_parser(max_frame_bytes: int) -> Any:
        return PlainFrameParser(max_frame_bytes)


# ============================================================================ throughput and latency


def _empty_callback(manager: Any, event: Any) -> None:
    """What bare panoramisk runs per event: nothing."""


async def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.005)


async def run_bare(sender: Sender, events: int) -> RunResult:
    """Bare panoramisk: stock Manager, default AMIProtocol, one empty sync ``'*'`` callback."""
    manager = Manager(
        host=HOST,
        port=sender.port,
        username=USER,
        secret=SECRET,
        ping_delay=10**7,
        ping_interval=10**7,
        reconnect_timeout=3600,
        on_login=lambda m: None,
        on_connect=lambda m: None,
        on_disconnect=lambda m, exc: None,
    )
    manager.loop = asyncio.get_running_loop()
    manager.register_event("*", _empty_callback)
    sender.serve("blast")
    manager.connect()
    try:
        await sender.recv()  # ready
        await _wait_for(lambda: bool(manager.authenticated), "bare panoramisk login")
        await asyncio.sleep(0.2)
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        sender.send("go")
        await sender.recv()  # sent
        # Answered only after every event before it has been dispatched (one ordered stream).
        await asyncio.wait_for(manager.send_action({"Action": "Ping"}), RUN_TIMEOUT_S)
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        manager.close()
        sender.send("close")
    return RunResult(events, t1 - t0, cpu1 - cpu0)


def bench_settings(port: int, data: Path) -> Settings:
    """Default settings (the service standard), pointed at the sender and a private store."""
    env = {
        "PBX_BRIDGE_AMI_SECRET": SECRET,
        "PBX_BRIDGE_AMI_HOST": HOST,
        "PBX_BRIDGE_AMI_PORT": str(port),
        "PBX_BRIDGE_AMI_USERNAME": USER,
        "PBX_BRIDGE_HTTP_LISTEN": f"{HOST}:0",
        "PBX_BRIDGE_STORE_PATH": str(data),
    }
    return load_settings(None, env)


@dataclass(slots=True)
class HubProbe:
    """A hub subscriber doing an MQTT publisher's per-message work (the JSON payload), timing each message."""

    latencies: list[float] = field(default_factory=list)
    messages: int = 0
    dropped: int = 0

    async def run(self, hub: Hub) -> None:
        sub = hub.subscribe()
        try:
            while True:
                self._take(await sub.queue.get())
                while not sub.queue.empty():
                    self._take(sub.queue.get_nowait())
                self.dropped = sub.dropped
        finally:
            hub.unsubscribe(sub)

    def _take(self, message: dict[str, Any]) -> None:
        now = time.time()
        self.messages += 1
        mqtt_payload(message)
        kind = message.get("type")
        ts: float | None = None
        if kind in ("call_event", "agent_state"):
            ts = message.get("ts")
        elif kind == "record":
            ended = message["record"].get("ended_at")
            if ended:
                ts = datetime.fromisoformat(str(ended).replace("Z", "+00:00")).timestamp()
        if ts is not None:
            self.latencies.append(now - ts)


async def _sse_client(port: int) -> None:
    """A wallboard: reads the live stream (a snapshot on each change, at most 4/s)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/api/live/stream") as resp:
        async for _ in resp.content.iter_any():
            pass


async def run_pipeline(
    sender: Sender, events: int, *, plain: bool = False, paced_rate: float = 0.0
) -> tuple[RunResult, HubProbe]:
    """The whole daemon against the sender; ``plain`` swaps in the pre-optimisation AMI edge."""
    probe = HubProbe()
    with tempfile.TemporaryDirectory(prefix="pbx-bridge-bench-") as tmp:
        settings = bench_settings(sender.port, Path(tmp))
        daemon = Daemon(settings, make_store(settings), registry=CollectorRegistry())
        if plain:
            daemon.ami.manager.config["protocol_factory"] = functools.partial(
                PlainProtocol, daemon.sink, daemon.ami.options.max_frame_bytes
            )
        sender.serve("paced" if paced_rate else "blast", paced_rate, events)
        task = asyncio.create_task(daemon.run(), name="bench-daemon")
        helpers: list[asyncio.Task[None]] = []
        try:
            await sender.recv()  # ready
            await _wait_for(lambda: daemon.ami.counters.logins >= 1, "daemon login")
            await asyncio.wait_for(daemon.started.wait(), 30)
            helpers.append(asyncio.create_task(probe.run(daemon.hub), name="bench-hub-probe"))
            if daemon.http_port:
                helpers.append(asyncio.create_task(_sse_client(daemon.http_port), name="bench-sse"))
            await asyncio.sleep(0.3)  # the resync after login is done
            before = daemon.tracker.stats.events
            gc.collect()
            cpu0, t0 = time.process_time(), time.perf_counter()
            sender.send("go")
            _, _, send_s = await sender.recv()  # sent
            t_sent = time.perf_counter()
            await daemon.ami.action({"Action": "Ping"}, timeout=RUN_TIMEOUT_S)
            while daemon.tracker.stats.events - before < events and not daemon.sink.counters.dropped:
                if task.done():
                    raise RuntimeError("the daemon stopped during the run")
                await asyncio.sleep(0.001)
            t_applied = time.perf_counter()
            await daemon.store.flush(RUN_TIMEOUT_S)
            t1, cpu1 = time.perf_counter(), time.process_time()
            phases = {"sending": send_s, "sent": t_sent - t0, "applied": t_applied - t0, "flushed": t1 - t0}
            applied = daemon.tracker.stats.events - before
            note = f"{daemon.tracker.stats.calls_ended} calls"
            if daemon.sink.counters.dropped:
                note += f", {daemon.sink.counters.dropped} EVENTS DROPPED (queue full)"
            if applied != events:
                note += f", {applied} of {events} events applied"
        finally:
            for h in helpers:
                h.cancel()
            for h in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 60)
            sender.send("close")
    return RunResult(events, t1 - t0, cpu1 - cpu0, note, phases), probe


LABELS = {
    "bare": "bare panoramisk (stock Manager + AMIProtocol, empty '*' callback)",
    "plain": "full pipeline, plain AMI edge (before)",
    "full": "full pipeline (after)",
}


async def throughput_section(sender: Sender, n_events: int, repeat: int) -> dict[str, float]:
    """Alternating runs of the three receivers on the same stream; prints and returns median events/s."""
    runs: dict[str, list[RunResult]] = {"bare": [], "plain": [], "full": []}
    for _ in range(repeat):
        runs["bare"].append(await run_bare(sender, n_events))
        runs["plain"].append((await run_pipeline(sender, n_events, plain=True))[0])
        runs["full"].append((await run_pipeline(sender, n_events))[0])
    medians: dict[str, float] = {}
    for key, results in runs.items():
        rates = [r.rate for r in results]
        medians[key] = _median(rates)
        cpu = _median([r.cpu_s / r.events * 1e6 for r in results])
        notes = "; ".join(sorted({r.note for r in results if r.note}))
        _out(
            f"throughput: {LABELS[key]}: median {_rate(medians[key])} events/s "
            f"(runs: {', '.join(_rate(x) for x in rates)}; receiver CPU {cpu:.1f} us/event)"
            + (f" [{notes}]" if notes else "")
        )
    # Runs of one repeat follow each other within seconds: their ratio cancels the machine's slower
    # drift (a shared VM's speed moves by tens of percent over minutes), so it is printed as well.
    paired = [f.rate / max(b.rate, 1e-9) for b, f in zip(runs["bare"], runs["full"], strict=True)]
    _out(
        f"throughput: full / bare panoramisk per repeat (runs back to back): "
        f"{', '.join(f'{x:.2f}' for x in paired)}; median {_median(paired):.2f}"
    )
    _out(
        f"throughput: before/after (AMI edge): {_rate(medians['plain'])} -> {_rate(medians['full'])} events/s "
        f"({medians['full'] / max(medians['plain'], 1e-9):.2f}x); full pipeline / bare panoramisk = "
        f"{medians['full'] / max(medians['bare'], 1e-9):.2f}"
    )
    return medians


async def latency_section(sender: Sender, events: int, opts: BenchOptions) -> None:
    p50s: list[float] = []
    p99s: list[float] = []
    worst = 0.0
    timed = dropped = 0
    runs = min(opts.repeat, 3)
    for _ in range(runs):
        _, probe = await run_pipeline(sender, events, paced_rate=opts.rate)
        lat = sorted(probe.latencies)
        if lat:
            p50s.append(lat[len(lat) // 2] * 1000)
            p99s.append(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000)
            worst = max(worst, lat[-1] * 1000)
        timed += len(lat)
        dropped += probe.dropped
    _out(
        f"latency: {_rate(opts.rate)} events/s paced, {events:,} events x {runs} runs, {timed:,} hub "
        f"messages timed (event Timestamp written at send -> hub subscriber): p50 {_median(p50s):.1f} ms, "
        f"p99 {_median(p99s):.1f} ms (medians of runs; worst single message {worst:.1f} ms"
        + (f"; {dropped} hub messages dropped" if dropped else "")
        + ")"
    )


# ============================================================================ memory


# The events of a.ami's answered queue call that a lean call keeps (each one moves the engine's state).
LEAN_EVENTS = frozenset(
    {
        "Newchannel", "QueueCallerJoin", "DialBegin", "DialEnd", "QueueCallerLeave", "AgentConnect",
        "BridgeEnter", "HangupRequest", "BridgeLeave", "Hangup", "BridgeDestroy",
    }
)  # fmt: skip
Template = list[tuple[str, float, list[tuple[str, str]]]]


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _trace(name: str) -> Path:
    """A real capture from the repository's test fixtures (the bench runs from a checkout)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "traces" / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: the real capture the memory template is taken from")
    return path


def call_template() -> Template:
    """The answered queue call of the real capture ``a.ami``, lean: its engine events only."""
    decoder = EventDecoder()
    events: Template = []
    t0: float | None = None
    for frame in FrameParser().feed(_trace("a.ami").read_bytes()):
        ev = decoder.decode(frame)
        if not isinstance(ev, AmiEvent) or ev.name not in LEAN_EVENTS:
            continue
        t0 = ev.ts if t0 is None else t0
        events.append((ev.name, ev.ts - t0, list(ev.headers.items())))
    return events


def lean_calls(template: Template, n: int, t0: float) -> Iterator[AmiEvent]:
    """``n`` copies of the template call, one after another, each with fresh ids."""
    ids: dict[str, int] = {}
    for _, _, headers in template:
        for key, value in headers:
            if key.endswith(("Uniqueid", "Linkedid", "Channel")) and value and value not in ids:
                ids[value] = len(ids)
    # (name, offset, fixed headers, [(key, id slot)]): only the id slots change from call to call.
    shaped = [
        (
            name,
            offset,
            {k: v for k, v in headers if v not in ids and k != "Timestamp"},
            [(k, ids[v]) for k, v in headers if v in ids],
        )
        for name, offset, headers in template
    ]
    span = max(offset for _, offset, _, _ in shaped) + 1.0
    kinds = list(ids)
    for i in range(n):
        fresh = []
        for j, old in enumerate(kinds):
            seq = i * len(kinds) + j
            if "/" in old:  # a channel name: the same device, a fresh sequence number
                fresh.append(f"{old.rsplit('-', 1)[0]}-{seq:08x}")
            elif old.count("-") >= 4:  # a bridge id
                fresh.append(f"bench-bridge-{seq}")
            else:  # a uniqueid / linkedid
                fresh.append(f"1700000000.{seq}")
        base = t0 + i * span
        for name, offset, fixed, slots in shaped:
            event = dict(fixed)
            for key, slot in slots:
                event[key] = fresh[slot]
            ts = base + offset
            event["Timestamp"] = f"{ts:.6f}"
            yield AmiEvent(name, ts, headers=event)


_CONTAINERS = (
    "_chans", "_by_name", "_calls", "_calls_by_lid", "_dials", "_bridges", "_old_bridges", "_gone", "_used_ids",
    "_members",
)  # fmt: skip


def tracker_sizes(tracker: CallTracker) -> dict[str, int]:
    """Entries in the tracker's long-lived containers (what would grow if calls leaked)."""
    sizes = {name: len(getattr(tracker, name)) for name in _CONTAINERS if hasattr(tracker, name)}
    floor = tracker.floor
    sizes["floor.members"] = len(floor.members)
    sizes["floor.queues"] = len(floor.queues)
    sizes["floor.waiting"] = sum(len(q.waiting) for q in floor.queues.values())
    sizes["floor.unattended"] = len(floor.unattended)
    return sizes


MemoryResult = tuple[int, list[tuple[int, int, int, float]], bool, dict[str, int]]


def _memory_main(conn: Connection, calls: int) -> None:
    """In a fresh process: RSS of a tracker after 0, calls/10 and calls finished calls."""
    template = call_template()
    tracker = build_tracker(load_settings(None, {}))
    gc.collect()
    stream = lean_calls(template, calls, 1_700_000_000.0)
    points: list[tuple[int, int, int, float]] = []
    done = 0
    t0 = time.perf_counter()
    for target in sorted({0, max(calls // 10, 1), calls}):
        while done < target:
            for _ in range(len(template)):
                tracker.feed(next(stream))
            done += 1
        gc.collect()
        points.append((target, _rss_kib(), len(tracker.open_calls), time.perf_counter() - t0))
    conn.send((len(template), points, tracker.stats.calls_ended == calls, tracker_sizes(tracker)))


def run_memory(calls: int) -> MemoryResult:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_memory_main, args=(child, calls), name="pbx-bridge-bench-memory", daemon=True)
    proc.start()
    child.close()
    try:
        result: MemoryResult = parent.recv()
    finally:
        proc.join(timeout=30)
        parent.close()
    return result


def memory_section(calls: int) -> None:
    per_call, points, ok, sizes = run_memory(calls)
    text = ", ".join(f"{c:,} calls {rss / 1024:.1f} MiB" for c, rss, _, _ in points)
    growth = ""
    if len(points) >= 3 and points[-1][0] > points[-2][0]:
        per = (points[-1][1] - points[-2][1]) * 1024 / (points[-1][0] - points[-2][0])
        growth = f"; {per:+.1f} B/call from {points[-2][0]:,} to {points[-1][0]:,} calls"
    _out(
        f"memory: RSS after gc.collect(), lean answered calls ({per_call} engine events each) fed to the engine: "
        f"{text}{growth}; open calls at the end {points[-1][2]}; {points[-1][3]:.0f} s"
        + ("" if ok else " (NOT every call ended)")
    )
    _out("memory: tracker containers at the end: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))


# ============================================================================ replay


@dataclass(slots=True)
class ReplayFigures:
    events: int = 0
    calls: int = 0
    sim_s: float = 0.0
    wall_s: float = 0.0  # parse → engine, as ``pbx-bridge replay`` runs them
    gen_s: float = 0.0


def run_replay(opts: BenchOptions) -> ReplayFigures:
    """A whole generated day streamed through parser → decoder → engine, timing only those."""
    parser = engine_parser()  # what ``pbx-bridge replay`` uses
    decoder = EventDecoder()
    tracker = build_tracker(load_settings(None, {}))
    fig = ReplayFigures()
    clock = time.perf_counter

    def push(chunk: bytes) -> None:
        t = clock()
        feed = tracker.feed
        decode = decoder.decode
        for frame in parser.feed(chunk):
            item = decode(frame)
            if item is not None:
                feed(item)
        fig.wall_s += clock() - t

    t_all = clock()
    first = last = REPLAY_START
    buf: list[bytes] = [capture_preamble(REPLAY_START)]
    size = 0
    for ts, headers in generate_day(opts.seed, opts.agents, opts.calls_per_hour, opts.hours, REPLAY_START):
        if fig.events == 0:
            first = ts
        last = ts
        frame = encode_frame(headers)
        buf.append(frame)
        size += len(frame)
        fig.events += 1
        if size >= BLAST_CHUNK:
            push(b"".join(buf))
            buf.clear()
            size = 0
    push(b"".join(buf))
    t = clock()
    tracker.close_all()
    fig.wall_s += clock() - t
    fig.calls = tracker.stats.calls_ended
    fig.sim_s = last - first
    fig.gen_s = clock() - t_all - fig.wall_s
    return fig


def replay_section(opts: BenchOptions) -> None:
    fig = run_replay(opts)
    speed = fig.sim_s / max(fig.wall_s, 1e-9)
    _out(
        f"replay: {opts.agents} agents, {opts.calls_per_hour:g} calls/h, {opts.hours:g} h day, noise on: "
        f"{fig.events:,} events, {fig.calls:,} calls, {fig.sim_s:,.0f} s simulated; parse -> engine "
        f"{fig.wall_s:.1f} s = {speed:,.0f}x real time ({_rate(fig.events / max(fig.wall_s, 1e-9))} events/s; "
        f"generating the day took {fig.gen_s:.0f} s more, not counted)"
    )


# ============================================================================ parsers alone


def parser_rates(blob: bytes, chunk: int = BLAST_CHUNK) -> dict[str, float]:
    """Messages/s of each parser alone on the same bytes (no network, no engine; best of 3)."""
    chunks = [blob[i : i + chunk] for i in range(0, len(blob), chunk)]
    n = blob.count(TERMINATOR)

    class _Factory:
        def dispatch(self, message: Any) -> None:
            pass

    def panoramisk() -> None:
        proto = AMIProtocol()
        proto.connection_made(None)
        proto.factory = _Factory()
        proto.encoding = "utf-8"
        proto.version = "bench"
        proto.log = logging.getLogger("pbx_bridge.bench.silent")
        proto.log.disabled = True
        for c in chunks:
            proto.data_received(c)

    def ours(make: Callable[[], Any]) -> None:
        parser = make()
        for c in chunks:
            parser.feed(c)

    cases: dict[str, Callable[[], None]] = {
        "panoramisk AMIProtocol.data_received": panoramisk,
        "plain FrameParser (before)": functools.partial(ours, PlainFrameParser),
        "FrameParser, full headers": functools.partial(ours, FrameParser),
        "FrameParser, skimming (daemon, replay)": functools.partial(ours, engine_parser),
    }
    rates: dict[str, float] = {}
    for label, run in cases.items():
        times = []
        for _ in range(3):
            t = time.process_time()
            run()
            times.append(time.process_time() - t)
        rates[label] = n / max(min(times), 1e-9)
    return rates


# ============================================================================ the whole run


async def run_bench(options: BenchOptions) -> int:
    """Measure and print every figure; the last line is ``ratio: R``. Returns the exit status."""
    opts = options.effective()
    saved = structlog.get_config()
    # The daemon logs a line per call at INFO: the bench prints figures, not logs.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    sender: Sender | None = None
    try:
        _out(
            f"pbx-bridge bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}" + (" (QUICK: smoke sizes, the figures mean nothing)" if opts.quick else "")
        )
        t = time.perf_counter()
        blob, n_events, noise = build_stream(opts, float(int(time.time()) - 2 * 3600))
        _out(
            f"stream: {n_events:,} events of a generated day ({opts.agents} agents, {opts.calls_per_hour:g} "
            f"calls/h), {len(blob) / max(n_events, 1):.0f} B/event, {noise / max(n_events, 1):.0%} read by the "
            f"engine by name only (noise); generated in {time.perf_counter() - t:.1f} s"
        )
        if opts.wants("parsers"):
            for label, rate in parser_rates(blob).items():
                _out(f"parser in-process: {label}: {_rate(rate)} msg/s")
        medians: dict[str, float] = {}
        if opts.wants("throughput") or opts.wants("latency"):
            sender = Sender()
            sender.load(blob)
            del blob
            if opts.wants("throughput"):
                medians = await throughput_section(sender, n_events, opts.repeat)
            if opts.wants("latency"):
                await latency_section(sender, min(n_events, int(opts.rate * opts.latency_s)), opts)
            sender.close()
            sender = None
        if opts.wants("replay"):
            replay_section(opts)
        if opts.wants("memory"):
            memory_section(opts.calls)
        if medians.get("bare"):
            _out(f"ratio: {medians['full'] / medians['bare']:.2f}")
        else:
            _out("ratio: n/a (throughput not measured)")
        return 0
    finally:
        if sender is not None:
            sender.close()
        structlog.configure(**saved)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``bench`` options (``pbx-bridge bench`` and ``python -m pbx_bridge.bench``)."""
    d = BenchOptions()
    ap.add_argument("--events", type=int, default=d.events, help="events per throughput run")
    ap.add_argument("--calls", type=int, default=d.calls, help="finished calls for the memory curve")
    ap.add_argument("--repeat", type=int, default=d.repeat, help="runs per mode (medians are printed)")
    ap.add_argument("--rate", type=float, default=d.rate, help="latency runs: events/s the sender paces at")
    ap.add_argument("--latency-s", type=float, default=d.latency_s, help="latency runs: seconds of traffic each")
    ap.add_argument("--agents", type=int, default=d.agents, help="agents of the generated centre")
    ap.add_argument("--calls-per-hour", type=float, default=d.calls_per_hour)
    ap.add_argument("--hours", type=float, default=d.hours, help="length of the replayed day")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (its figures mean nothing)")
    ap.add_argument("--sections", default=d.sections, help=f"comma-separated subset of {','.join(SECTIONS)}")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        events=args.events,
        calls=args.calls,
        repeat=args.repeat,
        rate=args.rate,
        latency_s=args.latency_s,
        agents=args.agents,
        calls_per_hour=args.calls_per_hour,
        hours=args.hours,
        seed=args.seed,
        quick=args.quick,
        sections=args.sections,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pbx_bridge.bench", description=__doc__.split("\n", 1)[0])
    add_arguments(ap)
    return asyncio.run(run_bench(options_from_args(ap.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
