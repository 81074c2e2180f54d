"""The benchmark's smoke run: every section runs at tiny sizes and prints its line (no timing checked)."""

from __future__ import annotations

import re

import pytest

from pbx_bridge.bench import BenchOptions, run_bench


async def test_quick_bench_prints_every_figure_and_ends_with_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    """A --quick run measures throughput, latency, replay and memory and ends with ``ratio: R``."""
    status = await run_bench(BenchOptions(quick=True))
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    text = "\n".join(lines)
    for prefix in (
        "stream: ",
        "parser in-process: ",
        "throughput: bare panoramisk",
        "throughput: full pipeline, plain AMI edge (before)",
        "throughput: full pipeline (after)",
        "latency: ",
        "replay: ",
        "memory: ",
    ):
        assert any(line.startswith(prefix) for line in lines), f"no line starting {prefix!r} in:\n{text}"
    assert "EVENTS DROPPED" not in text
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-1]
