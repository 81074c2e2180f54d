"""Fixtures for the AMI emulator tests: a running emulator and raw-socket AMI clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbx_bridge.ami.frames import Banner, Frame, FrameParser, encode_frame
from pbx_bridge.emulator import AmiEmulator

SECRET = "emulator-test-secret"
TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


@pytest.fixture
async def emu() -> AsyncIterator[AmiEmulator]:
    emulator = AmiEmulator(secret=SECRET)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.close()


class RawClient:
    """A bare AMI client on a socket, for byte-exact checks panoramisk would hide."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.pending: list[Frame | Banner] = []

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, **headers: str) -> None:
        self.writer.write(encode_frame(headers))

    async def next(self, timeout: float = 2.0) -> Frame | Banner | None:
        """The next frame or banner; None at EOF."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def frame(self, timeout: float = 2.0) -> dict[str, str]:
        item = await self.next(timeout)
        assert isinstance(item, Frame), item
        return item.headers

    async def login(self, secret: str = SECRET) -> dict[str, str]:
        banner = await self.next()
        assert isinstance(banner, Banner)
        self.send(Action="Login", ActionID="login-1", Username="bridge", Secret=secret)
        return await self.frame()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw(emu: AmiEmulator) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(emu.port)
    try:
        yield client
    finally:
        await client.close()
