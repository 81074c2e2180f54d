"""Self-tests of the truth comparison: a wrong, missing or extra record must be reported."""

from __future__ import annotations

from typing import Any

from . import truth
from .captures import replay_capture


def records(name: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in replay_capture(name).records]


def test_a_correct_replay_has_no_mismatch() -> None:
    """The comparison of a correct replay checks many fields and reports nothing."""
    result = truth.compare(truth.load("a"), records("a"))
    assert result.mismatches == []
    assert result.calls == result.calls_right == 1
    assert result.fields > 10


def test_wrong_fields_are_reported_by_name() -> None:
    """A record with the wrong hangup side, agent and talk time is reported field by field."""
    (rec,) = records("a")
    rec.update(hangup_by="agent", agent="PJSIP/1001", talk_s=rec["talk_s"] + 5, violations=["hangup.agent_first"])
    result = truth.compare(truth.load("a"), [rec])
    text = "\n".join(result.mismatches)
    for field in ("hangup_by", "agent", "talk_s", "rule hangup.agent_first"):
        assert f": {field}: got" in text
    assert result.calls_right == 0


def test_a_missing_and_an_extra_record_are_reported() -> None:
    """A record too far from the truth's arrival pairs with nothing: one call without a record, one extra."""
    (rec,) = records("a")
    rec["arrived_at"] = "2000-01-01T00:00:00.000Z"
    result = truth.compare(truth.load("a"), [rec])
    assert any(line.endswith(": no record") for line in result.mismatches)
    assert any(line.startswith("extra record: ") for line in result.mismatches)


def test_rule_verdicts_are_not_judged_at_the_boundary() -> None:
    """A measured value within 1 s of a threshold accepts either verdict; further away it must match."""
    cmp = truth.Comparison()
    cmp.rule_by_threshold("x", set(), "answer.within_rings", 9.5, 9.0)
    cmp.rule_by_threshold("x", {"answer.within_rings"}, "answer.within_rings", 8.5, 9.0)
    assert cmp.fields == 0
    cmp.rule_by_threshold("x", set(), "answer.within_rings", 10.1, 9.0)
    assert cmp.fields == 1
    assert len(cmp.mismatches) == 1


def test_device_reads_every_agent_spelling() -> None:
    """Channel, interface and member-name spellings of an agent reduce to the same endpoint."""
    spellings = ["PJSIP/1001", "PJSIP/1001-0000002a", "agent1001", "Local/1001@from-queue/n", "1001"]
    assert {truth.device(s) for s in spellings} == {"1001"}
