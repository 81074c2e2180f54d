"""Rule thresholds (SERVICE_STANDARD.md) and policy overrides applied to a replayed capture."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pbx_bridge.engine import rules
from pbx_bridge.engine.policy import Measured, Policy, PolicySet, judge

from . import truth
from .captures import replay_capture

ANSWERED = Measured(
    inbound=True,
    offered=True,
    answered=True,
    in_hours=True,
    wait_s=5.0,
    hold_max_s=0.0,
    transfers_unconfirmed=False,
    transfer_lost=False,
    agent_hung_up_first=False,
    talk_s=30.0,
)
ABANDONED = replace(ANSWERED, answered=False, talk_s=None)


def rule_ids(policy: Policy, m: Measured) -> set[str]:
    violations, notices = judge(policy, m)
    return set(violations) | set(notices)


@pytest.mark.parametrize(
    ("seconds", "ring"),
    [(0.0, 1), (1.0, 1), (3.0, 1), (3.1, 2), (6.0, 2), (6.1, 3), (9.0, 3), (9.1, 4), (12.0, 4), (12.1, 5)],
)
def test_ring_number_at_three_seconds_a_ring(seconds: float, ring: int) -> None:
    """The ring sounding at a time to answer: 1.0-3.0 s is ring 1, 3.1 s ring 2 (3 s a ring)."""
    assert Policy().rings(seconds) == ring


def test_ring_boundaries_ignore_float_noise() -> None:
    """A wait that is 9 s up to float noise is still ring 3, not ring 4."""
    assert Policy().rings(3 * 3.0000000000001) == 3
    assert Policy().rings(0.1 + 0.2 + 8.7) == 3


@pytest.mark.parametrize(("wait", "breach"), [(9.0, False), (9.1, True)])
def test_answer_within_three_rings_boundary(wait: float, breach: bool) -> None:
    """An answer at 9.0 s is within three rings; at 9.1 s it breaks answer.within_rings."""
    assert (rules.ANSWER_WITHIN_RINGS in rule_ids(Policy(), replace(ANSWERED, wait_s=wait))) is breach


@pytest.mark.parametrize(("wait", "breach"), [(12.0, False), (12.1, True)])
@pytest.mark.parametrize("base", [ANSWERED, ABANDONED], ids=["answered", "abandoned"])
def test_fifth_ring_boundary(base: Measured, wait: float, breach: bool) -> None:
    """A caller hears a fifth ring after more than 12 s, whether answered or giving up."""
    assert (rules.ANSWER_FIVE_RINGS in rule_ids(Policy(), replace(base, wait_s=wait))) is breach


def test_unanswered_call_is_not_judged_on_within_rings() -> None:
    """answer.within_rings is about an agent answering: an abandoned call never breaks it."""
    ids = rule_ids(Policy(), replace(ABANDONED, wait_s=30.0))
    assert rules.ANSWER_WITHIN_RINGS not in ids
    assert {rules.CALL_UNANSWERED, rules.ANSWER_FIVE_RINGS} <= ids


def test_after_hours_and_not_offered_calls_break_no_answer_rule() -> None:
    """Outside service hours, or never offered, a call counts against no answer rule."""
    answer_rules = {rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS, rules.CALL_UNANSWERED}
    for base in (ANSWERED, ABANDONED):
        assert not rule_ids(Policy(), replace(base, wait_s=40.0, in_hours=False)) & answer_rules
        assert not rule_ids(Policy(), replace(base, wait_s=40.0, offered=False)) & answer_rules


@pytest.mark.parametrize(("hold", "breach"), [(60.0, False), (60.1, True)])
def test_hold_limit_boundary(hold: float, breach: bool) -> None:
    """A hold of exactly 60 s is allowed; longer breaks hold.too_long."""
    assert (rules.HOLD_TOO_LONG in rule_ids(Policy(), replace(ANSWERED, hold_max_s=hold))) is breach


def test_talk_target_is_a_notice_and_the_maximum_a_violation() -> None:
    """Talk over 180 s is a notice only; over 300 s it is also a violation."""
    assert judge(Policy(), replace(ANSWERED, talk_s=180.0)) == ((), ())
    assert judge(Policy(), replace(ANSWERED, talk_s=200.0)) == ((), (rules.DURATION_OVER_TARGET,))
    assert judge(Policy(), replace(ANSWERED, talk_s=301.0)) == (
        (rules.DURATION_OVER_MAX,),
        (rules.DURATION_OVER_TARGET,),
    )


def test_lost_transfer_is_not_also_an_agent_hangup() -> None:
    """When the caller was lost after a transfer, the agent's leaving is not judged as hanging up first."""
    ids = rule_ids(
        Policy(), replace(ANSWERED, transfers_unconfirmed=True, transfer_lost=True, agent_hung_up_first=True)
    )
    assert ids == {rules.TRANSFER_UNCONFIRMED, rules.TRANSFER_LOST}


def test_switches_turn_rules_off() -> None:
    """transfer_must_confirm and hangup_customer_first set to false turn their rules off."""
    m = replace(ANSWERED, transfers_unconfirmed=True, agent_hung_up_first=True)
    assert rule_ids(Policy(), m) == {rules.TRANSFER_UNCONFIRMED, rules.HANGUP_AGENT_FIRST}
    assert rule_ids(Policy(transfer_must_confirm=False, hangup_customer_first=False), m) == set()


def test_violations_follow_the_order_of_the_standard() -> None:
    """Violations come out in the order SERVICE_STANDARD.md lists the rules."""
    m = replace(
        ANSWERED,
        wait_s=20.0,
        hold_max_s=90.0,
        transfers_unconfirmed=True,
        agent_hung_up_first=True,
        talk_s=400.0,
    )
    violations, notices = judge(Policy(), m)
    assert list(violations) == [r for r in rules.PER_CALL if r in violations]
    assert len(violations) == 6
    assert notices == (rules.DURATION_OVER_TARGET,)


def test_ring_length_is_part_of_the_policy() -> None:
    """A deployment with 4 s rings counts 13 s as ring 4."""
    assert Policy(ring_seconds=4.0).rings(13.0) == 4
    assert Policy(ring_seconds=4.0).rings(12.0) == 3


# ---------------------------------------------------------------------------------------------
# Overrides applied to a replayed capture (b: answered after ~13 s, the agent hanging up first)


def b_truth_ring() -> int:
    (call,) = truth.load("b")["calls"]
    ring: int = call["rings_ceil"]
    return ring


def test_b_default_policy_flags_the_late_answer() -> None:
    """Under the default policy, b (answered on ring 5) breaks within_rings and five_rings."""
    assert b_truth_ring() == 5
    (rec,) = replay_capture("b").records
    assert rec.rings == b_truth_ring()
    assert {rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS, rules.HANGUP_AGENT_FIRST} == set(rec.violations)


def test_b_rings_limit_four_still_flags_ring_five() -> None:
    """Allowing four rings does not excuse b, answered on the fifth ring."""
    policies = PolicySet().with_default(rings_limit=4)
    (rec,) = replay_capture("b", policies).records
    assert rules.ANSWER_WITHIN_RINGS in rec.violations


def test_b_rings_limit_five_changes_the_verdict() -> None:
    """Allowing five rings (apology from the sixth) clears b's answer rules, not its agent-first hangup."""
    policies = PolicySet().with_default(rings_limit=5, rings_apology=6)
    (rec,) = replay_capture("b", policies).records
    assert rec.violations == (rules.HANGUP_AGENT_FIRST,)


def test_b_longer_rings_change_the_verdict() -> None:
    """At 3.5 s a ring b is answered on ring 4: within a four-ring limit, and before the fifth ring."""
    policies = PolicySet().with_default(ring_seconds=3.5, rings_limit=4)
    (rec,) = replay_capture("b", policies).records
    assert rec.rings == 4
    assert rec.violations == (rules.HANGUP_AGENT_FIRST,)


def test_b_per_queue_override_applies_to_its_queue_only() -> None:
    """An override for b's queue changes b's verdict; one for another queue does not."""
    (call,) = truth.load("b")["calls"]
    lenient = Policy(rings_limit=5, rings_apology=6, hangup_customer_first=False)
    (own,) = replay_capture("b", PolicySet(queues={call["queue"]: lenient})).records
    (other,) = replay_capture("b", PolicySet(queues={"sales": lenient})).records
    assert own.violations == ()
    assert set(other.violations) == {rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS, rules.HANGUP_AGENT_FIRST}
