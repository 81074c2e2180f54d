"""`pbx-bridge demo`: the real daemon against the built-in emulator, as a newcomer starts it."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import urllib.request

from tooling import free_port

FAMILIES = (
    "pbx_bridge_calls_total",
    "pbx_bridge_violations_total",
    "pbx_bridge_ami_events_total",
    "pbx_bridge_ami_events_dropped_total",
    "pbx_bridge_ami_parse_errors_total",
    "pbx_bridge_ami_reconnects_total",
    "pbx_bridge_time_to_answer_seconds",
    "pbx_bridge_hold_seconds",
    "pbx_bridge_talk_seconds",
    "pbx_bridge_calls_waiting",
    "pbx_bridge_longest_wait_seconds",
    "pbx_bridge_calls_on_hold",
    "pbx_bridge_longest_hold_seconds",
    "pbx_bridge_calls_talking",
    "pbx_bridge_agents",
    "pbx_bridge_ami_connected",
    "pbx_bridge_last_event_age_seconds",
)


async def scrape(port: int) -> str | None:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    try:
        return await asyncio.to_thread(get)
    except OSError:
        return None


def events_total(body: str) -> float:
    return sum(float(v) for v in re.findall(r"^pbx_bridge_ami_events_total\{[^}]*\} (\S+)$", body, re.M))


async def test_demo_serves_every_metric_family_within_15_s_and_numbers_move() -> None:
    """The demo answers /metrics with every contract family within 15 s, the counts grow, and SIGTERM exits 0."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "demo", "--listen", f"127.0.0.1:{port}",
        "--speed", "20", "--seed", "3", "--log-level", "WARNING",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        body = None
        while loop.time() < deadline:
            body = await scrape(port)
            if body and all(f"\n{f}" in body or body.startswith(f) for f in FAMILIES):
                break
            await asyncio.sleep(0.25)
        assert body is not None, "no /metrics within 15 s"
        missing = [f for f in FAMILIES if f"\n{f}" not in body]
        assert not missing, f"families missing within 15 s: {missing}"
        first = events_total(body)
        await asyncio.sleep(3)
        later = await scrape(port)
        assert later is not None and events_total(later) > first, "the demo's numbers do not move"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
