"""The Prometheus rules and config of metrics/ pass promtool: syntax, config, and unit tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

TIMEOUT_S = 120


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(proc.args)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.needs_promtool
def test_rules_pass_promtool_check(require_tool: Callable[[str, str], str], repo: Path) -> None:
    """promtool accepts the alerting and recording rules."""
    promtool = require_tool("promtool", "prometheus")
    _assert_ok(_run([promtool, "check", "rules", "metrics/alerts.yml", "metrics/recording.yml"], repo))


@pytest.mark.needs_promtool
def test_prometheus_config_passes_promtool_check(require_tool: Callable[[str, str], str], repo: Path) -> None:
    """promtool accepts prometheus.yml and finds its rule files beside it."""
    promtool = require_tool("promtool", "prometheus")
    proc = _run([promtool, "check", "config", "metrics/prometheus.yml"], repo)
    _assert_ok(proc)
    assert "2 rule files found" in proc.stdout + proc.stderr


@pytest.mark.needs_promtool
def test_rule_unit_tests_pass(require_tool: Callable[[str, str], str], repo: Path) -> None:
    """Every promtool unit test in metrics/tests passes: each alert fires and clears when it should."""
    promtool = require_tool("promtool", "prometheus")
    tests = sorted(str(p.relative_to(repo)) for p in (repo / "metrics" / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests in metrics/tests"
    proc = _run([promtool, "test", "rules", *tests], repo)
    _assert_ok(proc)
    assert proc.stdout.count("SUCCESS") == len(tests), proc.stdout


def test_missing_tool_fails_under_ci(require_tool: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI a missing promtool fails the test instead of skipping it."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y prometheus"):
        require_tool("pbx-bridge-no-such-tool", "prometheus")


def test_missing_tool_skips_outside_ci(
    require_tool: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside CI a missing promtool skips the test with the install hint."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y prometheus"):
        require_tool("pbx-bridge-no-such-tool", "prometheus")
