"""A real mosquitto broker on a loopback port, for the MQTT and fault suites."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tooling import free_port


class Broker:
    """One mosquitto process on a fixed loopback port; it can be killed and started again on that port."""

    def __init__(self, exe: str, workdir: Path, extra: str = "") -> None:
        self.exe = exe
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # Started by root, mosquitto would switch to its own user, who cannot enter pytest's private
        # tmp directories to read the password file or certificates given in ``extra``.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}{extra}", encoding="utf-8"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                pytest.fail(f"mosquitto exited at start-up:\n{self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"mosquitto did not listen on {self.port}:\n{self.log.read_text(errors='replace')}")
                time.sleep(0.02)

    def kill(self) -> None:
        """Kill -9: the broker vanishes without closing anything cleanly."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT): the broker still holds its sockets but answers nothing."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the broker (kill it if it does not stop in time)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"
