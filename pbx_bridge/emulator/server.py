"""AmiEmulator: an asyncio TCP server that speaks AMI the way Asterisk 22 does.

Theory of operation
-------------------
Each connection gets the banner ``Asterisk Call Manager/<version>\\r\\n``,
then reads actions (``Key: Value`` lines ended by a blank line, header names
case-insensitive as in ``astman_get_header``). Before a successful ``Login``
every other action is refused with ``Permission denied``; a failed login is
answered ``Authentication failed`` and the connection is closed, as Asterisk
does. After login the client gets ``FullyBooted`` (no ``Timestamp``, like the
real one) and every event passed to :meth:`AmiEmulator.emit`, stamped with
``Timestamp: <epoch>.<usec>`` unless it already has one.

Writes never block the caller: bytes go straight to each client's transport,
whose buffer absorbs what the socket cannot take yet, and a watchdog task per
client waits for that buffer to drain. A client whose unsent bytes pass
``max_backlog_bytes``, or whose socket does not drain within
``write_timeout``, is disconnected, the way Asterisk drops a session that
hits ``writetimeout``; other clients are unaffected. The PBX state behind ``CoreShowChannels``/``QueueStatus`` lives
in :mod:`pbx_bridge.emulator.pbx_state` and is rebuilt from emitted events.

Fault injection for tests: :meth:`drop_clients` (abrupt close),
:meth:`set_silent` (a hung peer: the socket stays open, nothing is answered
or sent), :meth:`restart` (``Shutdown`` event, connections closed, state
cleared, optional downtime during which connections are refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pbx_bridge.ami.frames import TERMINATOR, ParserStats, encode_frame, parse_block
from pbx_bridge.emulator.pbx_state import (
    Headers,
    PbxState,
    core_show_channels_response,
    queue_status_response,
    queue_summary_response,
)

log = logging.getLogger(__name__)

DEFAULT_BANNER_VERSION = "11.0.0"
MAX_ACTION_BYTES = 64 * 1024


@dataclass(slots=True)
class EmulatorStats:
    """Counters a test can assert on."""

    connections: int = 0
    logins: int = 0
    failed_logins: int = 0
    actions: int = 0
    events_emitted: int = 0
    slow_clients_dropped: int = 0


@dataclass(eq=False, slots=True)
class _Client:
    """One AMI session: its socket, login state and the watchdog on its output."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str
    logged_in: bool = False
    events_on: bool = True
    closing: bool = False
    closed: bool = False
    wrote: asyncio.Event = field(default_factory=asyncio.Event)
    watchdog: asyncio.Task[None] | None = None


def timestamp_now(clock: Callable[[], float] = time.time) -> str:
    """``<epoch>.<usec>`` as ``timestampevents = yes`` writes it."""
    return f"{clock():.6f}"


def with_timestamp(headers: Mapping[str, str], stamp: str) -> dict[str, str]:
    """Return the event with a ``Timestamp`` after ``Privilege`` (where Asterisk puts it) if it has none."""
    if "Timestamp" in headers:
        return dict(headers)
    out: dict[str, str] = {}
    placed = False
    for k, v in headers.items():
        out[k] = v
        if k == "Privilege":
            out["Timestamp"] = stamp
            placed = True
    if not placed:
        # No Privilege header: put it right after Event, or first.
        out = {}
        for k, v in headers.items():
            out[k] = v
            if k == "Event" and not placed:
                out["Timestamp"] = stamp
                placed = True
        if not placed:
            out = {"Timestamp": stamp, **out}
    return out


class AmiEmulator:
    """A fake Asterisk AMI server on a real socket.

    Args:
        host: address to bind.
        port: port to bind; 0 picks a free one (read it back from :attr:`port`).
        username: the only accepted AMI username.
        secret: its secret.
        banner_version: version in the greeting line.
        max_backlog_bytes: per-client unsent bytes beyond which the client counts as too slow.
        write_timeout: seconds a client socket may take to drain before it is dropped.
        clock: wall clock for timestamps (tests may pin it).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "bridge",
        secret: str = "emulator",  # noqa: S107 - a fake server's default, not a credential
        *,
        banner_version: str = DEFAULT_BANNER_VERSION,
        max_backlog_bytes: int = 4 * 1024 * 1024,
        write_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self._port = port
        self.username = username
        self.secret = secret
        self.banner_version = banner_version
        self.max_backlog_bytes = max_backlog_bytes
        self.write_timeout = write_timeout
        self.clock = clock
        self.state = PbxState()
        self.stats = EmulatorStats()
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._silent = False
        self._boot = clock()
        self._uid_counter = 0
        self._login_event = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The bound TCP port (valid after :meth:`start`)."""
        return self._port

    @property
    def clients(self) -> int:
        """Open connections."""
        return len(self._clients)

    @property
    def logged_in_clients(self) -> int:
        """Connections that completed a successful Login."""
        return sum(c.logged_in for c in self._clients)

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(self._on_connect, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.debug("AMI emulator listening on %s:%d", self.host, self._port)

    async def close(self) -> None:
        """Stop listening and close every connection abruptly."""
        await self._stop_listening()
        self.drop_clients()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> AmiEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # ----------------------------------------------------------------- fault injection

    def drop_clients(self) -> None:
        """Abort every connection at once (RST, no goodbye), like a crashed PBX or a cut cable."""
        for client in list(self._clients):
            self._drop(client)

    def set_silent(self, silent: bool = True) -> None:
        """Hang (True) or revive (False): while silent nothing is answered and no event is sent.

        The sockets stay open, so only a client-side watchdog notices. Events emitted
        meanwhile still update the PBX state but are never delivered.
        """
        self._silent = silent

    @property
    def silent(self) -> bool:
        """Whether the emulator plays a hung peer."""
        return self._silent

    async def restart(
        self,
        *,
        downtime: float = 0.0,
        banner_version: str | None = None,
        shutdown_event: bool = True,
    ) -> None:
        """Behave like ``core restart now``.

        Sends ``Shutdown`` (``Restart: True``) to logged-in clients, closes every
        connection, forgets all channels and queues, resets uptime and the uniqueid
        counter. With ``downtime`` the port refuses connections for that long. With
        ``banner_version`` new connections are greeted with that version.
        """
        if shutdown_event:
            self.emit_nowait(
                {"Event": "Shutdown", "Privilege": "system,all", "Shutdown": "Cleanly", "Restart": "True"}
            )
            await self.drain(timeout=1.0)
        for client in list(self._clients):
            self._close_gracefully(client)
        self.state.clear()
        self._boot = self.clock()
        self._uid_counter = 0
        if banner_version is not None:
            self.banner_version = banner_version
        if downtime > 0 and self._server is not None:
            await self._stop_listening()
            await asyncio.sleep(downtime)
            self._server = await asyncio.start_server(self._on_connect, self.host, self._port)

    def new_uniqueid(self) -> str:
        """A fresh ``<epoch>.<counter>`` uniqueid, the shape Asterisk uses (counter reset by restart)."""
        uid = f"{int(self.clock())}.{self._uid_counter}"
        self._uid_counter += 1
        return uid

    # ----------------------------------------------------------------- events

    async def emit(self, headers: Mapping[str, str]) -> None:
        """Send one event to every logged-in client (never waits on a client)."""
        self.emit_nowait(headers)

    def emit_nowait(self, headers: Mapping[str, str]) -> None:
        """Synchronous :meth:`emit`, for callers outside a coroutine."""
        stamped = with_timestamp(headers, timestamp_now(self.clock))
        self.state.apply(stamped, self.clock())
        self.stats.events_emitted += 1
        if self._silent:
            return
        data = encode_frame(stamped)
        for client in list(self._clients):
            if client.logged_in and client.events_on:
                self._enqueue(client, data)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every client's socket accepts more (or the client is dropped). False on timeout.

        A player sending as fast as it can calls this now and then, so it slows to the pace of
        its readers instead of overflowing their buffers.
        """
        waits = [_drained(c.writer) for c in self._clients if not c.closed]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_logged_in(self, count: int = 1, timeout: float | None = 5.0) -> None:
        """Wait until at least ``count`` clients are logged in (TimeoutError after ``timeout``; None waits forever)."""
        async with asyncio.timeout(timeout):
            while self.logged_in_clients < count:
                self._login_event.clear()
                await self._login_event.wait()

    # ----------------------------------------------------------------- connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        client = _Client(reader=reader, writer=writer, peer=peer)
        self._clients.add(client)
        self.stats.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        watchdog = client.watchdog = asyncio.create_task(self._watch(client))
        self._enqueue(client, f"Asterisk Call Manager/{self.banner_version}\r\n".encode("ascii"))
        try:
            await self._read_loop(client)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not client.closing:
                self._drop(client)
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog  # ends at once: _forget woke it
            if task is not None:
                self._handlers.discard(task)

    async def _read_loop(self, client: _Client) -> None:
        buf = bytearray()
        stats = ParserStats()
        while not client.closed:
            data = await client.reader.read(65536)
            if not data:
                return
            buf += data
            while True:
                end = buf.find(TERMINATOR)
                if end < 0:
                    break
                block = bytes(buf[:end])
                del buf[: end + 4]
                headers = parse_block(block.strip(b"\r\n"), stats)
                if headers:
                    self._on_action(client, headers)
                if client.closing:
                    return
            if len(buf) > MAX_ACTION_BYTES:
                # Asterisk also gives up on a peer that never ends its message.
                self._drop(client)
                return

    def _on_action(self, client: _Client, raw: Mapping[str, str]) -> None:
        if self._silent:
            return
        self.stats.actions += 1
        action = {k.lower(): v for k, v in raw.items()}
        name = action.get("action", "").strip().lower()
        aid = action.get("actionid")
        if name == "login":
            self._login(client, action, aid)
            return
        if not client.logged_in:
            self._respond(client, [("Response", "Error"), *_aid(aid), ("Message", "Permission denied")])
            return
        now = self.clock()
        if name == "logoff":
            self._respond(
                client, [("Response", "Goodbye"), *_aid(aid), ("Message", "Thanks for all the fish.")]
            )
            self._close_gracefully(client)
        elif name == "ping":
            self._respond(
                client, [("Response", "Success"), *_aid(aid), ("Ping", "Pong"), ("Timestamp", f"{now:.6f}")]
            )
        elif name == "coreshowchannels":
            self._respond_all(client, core_show_channels_response(self.state, aid, now))
        elif name == "queuestatus":
            self._respond_all(client, queue_status_response(self.state, aid, now, action.get("queue")))
        elif name == "queuesummary":
            self._respond_all(client, queue_summary_response(self.state, aid, now, action.get("queue")))
        elif name == "events":
            mask = action.get("eventmask", "on").strip().lower()
            client.events_on = mask not in ("off", "none", "")
            self._respond(
                client, [("Response", "Success"), *_aid(aid), ("Events", "On" if client.events_on else "Off")]
            )
        else:
            self._respond(
                client,
                [
                    ("Response", "Error"),
                    *_aid(aid),
                    (
                        "Message",
                        f"Invalid/unknown command: {action.get('action', '')}. "
                        "Use Action: ListCommands to show available commands.",
                    ),
                ],
            )

    def _login(self, client: _Client, action: Mapping[str, str], aid: str | None) -> None:
        if action.get("username") == self.username and action.get("secret") == self.secret:
            client.logged_in = True
            client.events_on = action.get("events", "on").strip().lower() not in ("off", "none")
            self.stats.logins += 1
            self._respond(client, [("Response", "Success"), *_aid(aid), ("Message", "Authentication accepted")])
            if client.events_on:
                up = str(int(self.clock() - self._boot))
                self._respond(
                    client,
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", up),
                        ("LastReload", up),
                        ("Status", "Fully Booted"),
                    ],
                )
            self._login_event.set()
        else:
            self.stats.failed_logins += 1
            self._respond(client, [("Response", "Error"), *_aid(aid), ("Message", "Authentication failed")])
            # Asterisk ends the session after a failed authentication.
            self._close_gracefully(client)

    def _respond(self, client: _Client, headers: Headers) -> None:
        self._enqueue(client, encode_frame(headers))

    def _respond_all(self, client: _Client, frames: list[Headers]) -> None:
        self._enqueue(client, b"".join(encode_frame(f) for f in frames))

    def _enqueue(self, client: _Client, data: bytes) -> None:
        if client.closed or client.closing:
            return
        unsent = client.writer.transport.get_write_buffer_size()
        if unsent + len(data) > self.max_backlog_bytes:
            log.warning("AMI emulator: client %s fell %d bytes behind, dropped", client.peer, unsent)
            self.stats.slow_clients_dropped += 1
            self._drop(client)
            return
        client.writer.write(data)
        client.wrote.set()

    async def _watch(self, client: _Client) -> None:
        """Drop the client if its socket stays full for ``write_timeout`` (Asterisk's writetimeout)."""
        try:
            while not client.closed:
                await client.wrote.wait()
                client.wrote.clear()
                try:
                    await asyncio.wait_for(client.writer.drain(), self.write_timeout)
                except TimeoutError:
                    log.warning("AMI emulator: client %s did not read for %.1fs, dropped", client.peer,
                                self.write_timeout)
                    self.stats.slow_clients_dropped += 1
                    self._drop(client)
                    return
        except ConnectionError:
            self._drop(client)

    def _close_gracefully(self, client: _Client) -> None:
        """Close after what is already written (Logoff, failed login, restart): the transport flushes first."""
        if client.closed or client.closing:
            return
        client.closing = True
        client.writer.close()
        self._forget(client)

    def _drop(self, client: _Client) -> None:
        """Close at once, discarding unsent bytes (an RST for the peer)."""
        if client.closed:
            return
        client.writer.transport.abort()
        self._forget(client)

    def _forget(self, client: _Client) -> None:
        client.closed = True
        client.logged_in = False
        client.wrote.set()  # wake the watchdog so it ends
        self._clients.discard(client)


async def _drained(writer: asyncio.StreamWriter) -> None:
    # A transport closed meanwhile has nothing left to drain.
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _aid(action_id: str | None) -> Headers:
    return [("ActionID", action_id)] if action_id is not None else []
