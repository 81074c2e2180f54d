"""``pbx-bridge replay``: exit codes, the three output formats and the summary line."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbx_bridge.cli import main
from pbx_bridge.export import CSV_COLUMNS, TABLE_COLUMNS

from . import truth

SUMMARY = re.compile(r"^replay: (\d+) calls, (\d+) events, (\d+) events the engine could not place")


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's PBX_BRIDGE_* variables must not change what the CLI measures here."""
    for name in list(os.environ):
        if name.startswith("PBX_BRIDGE_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def n_calls(name: str) -> int:
    return len(truth.load(name)["calls"])


def test_missing_capture_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A capture that does not exist exits 2 with a single error line naming it, and no output."""
    missing = tmp_path / "nope.ami"
    code, out, err = run(capsys, "replay", str(missing))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert str(missing) in err
    assert "Traceback" not in err


def test_non_ami_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that is not an AMI byte stream exits 2 with one line saying so."""
    bogus = tmp_path / "calls.csv"
    bogus.write_text("call_id,caller\n1,5550101\n", encoding="utf-8")
    code, out, err = run(capsys, "replay", str(bogus))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "not an AMI capture" in err


def test_empty_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An empty file is not a capture either: exit 2."""
    empty = tmp_path / "empty.ami"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "replay", str(empty))
    assert code == 2
    assert len(err.splitlines()) == 1


def test_jsonl_has_one_parsable_line_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON lines output holds one record per call, each valid JSON with the record's contract fields."""
    code, out, _ = run(capsys, "replay", str(truth.capture_path("p")), "--ignore-hours")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == n_calls("p") == 4
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert {"call_id", "outcome", "hangup_by", "violations", "holds", "transfers"} <= set(rec)
    assert len({rec["call_id"] for rec in records}) == 4
    result = truth.compare(truth.load("p"), records)
    assert result.mismatches == []


def test_jsonl_keeps_chinese_text_readable(capsys: pytest.CaptureFixture[str]) -> None:
    """Chinese caller names are written as UTF-8 text in JSON lines, not as escapes."""
    code, out, _ = run(capsys, "replay", str(truth.capture_path("utf8_names")), "--ignore-hours")
    assert code == 0
    assert "张伟" in out and "王芳" in out and "李娜" in out
    assert "\\u" not in out


def test_csv_has_a_header_and_one_row_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    """CSV output is the documented header plus one row per call, Chinese names intact."""
    code, out, _ = run(capsys, "replay", str(truth.capture_path("utf8_names")), "--format", "csv", "--ignore-hours")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == n_calls("utf8_names")
    by_number = {row[CSV_COLUMNS.index("caller")]: row for row in rows[1:]}
    for t in truth.load("utf8_names")["calls"]:
        row = by_number[t["caller_number"]]
        assert row[CSV_COLUMNS.index("caller_name")] == truth.expected_caller_name(t, truth.load("utf8_names")["lines"])


def test_table_has_a_header_rule_and_one_line_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    """The table format prints a header, a rule and one line per call."""
    code, out, _ = run(capsys, "replay", str(truth.capture_path("p")), "--format", "table", "--ignore-hours")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == list(TABLE_COLUMNS)
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + n_calls("p")
    numbers = {t["caller_number"] for t in truth.load("p")["calls"]}
    assert {line.split()[1] for line in lines[2:]} == numbers


def test_summary_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Stderr carries one summary line with the number of calls; stdout carries only records."""
    code, out, err = run(capsys, "replay", str(truth.capture_path("restart")), "--ignore-hours")
    assert code == 0
    (line,) = err.splitlines()
    m = SUMMARY.match(line)
    assert m is not None, line
    assert int(m.group(1)) == n_calls("restart") == len(out.splitlines())
    assert int(m.group(2)) == truth.capture_path("restart").read_bytes().count(b"\r\nEvent: ")
    assert int(m.group(3)) == 0


def garbled_capture(tmp_path: Path, extra: bytes) -> Path:
    """Capture ``a`` with ``extra`` spliced in between two of its messages."""
    data = truth.capture_path("a").read_bytes()
    cut = data.index(b"\r\n\r\nEvent: ", len(data) // 2) + 4
    path = tmp_path / "garbled.ami"
    path.write_bytes(data[:cut] + extra + data[cut:])
    return path


@pytest.mark.parametrize(
    "extra",
    [
        b"this line is not AMI\r\nnor is this one\r\n\r\n",
        b"Event: Rename\r\nTimestamp: 1795451380.000000\r\nUniqueid: 999.999\r\nNewname: PJSIP/x-1\r\n\r\n",
    ],
    ids=["garbage", "unplaceable"],
)
def test_strict_fails_on_garbage_or_unplaceable_events(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: bytes
) -> None:
    """--strict exits 1 when a frame could not be parsed or an event fits no call; without it, 0."""
    path = garbled_capture(tmp_path, extra)
    code, out, _ = run(capsys, "replay", str(path), "--ignore-hours")
    assert code == 0
    assert len(out.splitlines()) == n_calls("a")
    code, out, err = run(capsys, "replay", str(path), "--ignore-hours", "--strict")
    assert code == 1
    assert len(out.splitlines()) == n_calls("a")  # the records are still written
    assert "--strict" in err


def test_strict_passes_a_clean_capture(capsys: pytest.CaptureFixture[str]) -> None:
    """--strict exits 0 on a real capture every event of which the engine placed."""
    code, _, err = run(capsys, "replay", str(truth.capture_path("k")), "--ignore-hours", "--strict")
    assert code == 0
    m = SUMMARY.match(err)
    assert m is not None and m.group(3) == "0"


def test_config_file_changes_the_verdict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A config file allowing five rings clears b's late-answer rules (b was answered on ring 5)."""
    config = tmp_path / "lenient.toml"
    config.write_text("[policy]\nrings_limit = 5\nrings_apology = 6\n", encoding="utf-8")
    b = str(truth.capture_path("b"))
    _, strict_out, _ = run(capsys, "replay", b, "--ignore-hours")
    code, lenient_out, _ = run(capsys, "replay", b, "--ignore-hours", "--config", str(config))
    assert code == 0
    assert "answer.within_rings" in json.loads(strict_out)["violations"]
    assert json.loads(lenient_out)["violations"] == ["hangup.agent_first"]


def test_bad_config_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An invalid config value exits 2 with an error naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text("[policy]\nrings_limit = 7\n", encoding="utf-8")
    code, out, err = run(capsys, "replay", str(truth.capture_path("a")), "--config", str(config))
    assert code == 2
    assert out == ""
    assert "rings_limit" in err


def in_default_hours(epoch: float) -> bool:
    """The standard's default calendar (Asia/Shanghai), enough for the winter dates of the captures."""
    local = datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    minutes = local.hour * 60 + local.minute
    assert local.month in (10, 11, 12, 1, 2, 3, 4)  # winter hours apply
    return 8 * 60 + 30 <= minutes < 12 * 60 or 14 * 60 + 30 <= minutes < 20 * 60


def test_service_hours_apply_without_ignore_hours(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --ignore-hours, an abandon outside the default service hours is after_hours, not unanswered."""
    (call,) = truth.load("c")["calls"]
    assert not in_default_hours(call["arrival_epoch"])
    code, out, _ = run(capsys, "replay", str(truth.capture_path("c")))
    assert code == 0
    rec = json.loads(out)
    assert rec["after_hours"] is True
    assert rec["outcome"] == "abandoned"
    assert not {"call.unanswered", "answer.five_rings"} & set(rec["violations"])


def test_runs_as_a_module_in_a_subprocess() -> None:
    """``python -m pbx_bridge replay`` works end to end and exits 0 with records on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "pbx_bridge", "replay", str(truth.capture_path("o")), "--ignore-hours"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["direction"] == "outbound"
    assert SUMMARY.match(proc.stderr)


def test_missing_capture_in_a_subprocess_exits_2(tmp_path: Path) -> None:
    """The installed entry point exits 2 with one line on stderr for a missing capture."""
    proc = subprocess.run(
        [sys.executable, "-m", "pbx_bridge", "replay", str(tmp_path / "missing.ami")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
