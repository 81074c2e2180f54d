"""Scenario tests: each real Asterisk capture replayed through the engine, checked against its truth.

The expectations come from the ground truth the scenario driver wrote (``NAME.json``) or from the
capture's own events, never from the engine's output.
"""

from __future__ import annotations

import pytest

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.engine import rules
from pbx_bridge.engine.live import agent_device
from pbx_bridge.engine.model import AgentStateChanged, CallRecord, Direction, HangupBy, Outcome

from . import truth
from .captures import events, replay, replay_capture
from .truth import Json, near

CAPTURES = truth.capture_names()


def test_every_capture_has_ground_truth() -> None:
    """The fixture folder holds the full set of real captures, each with its truth file."""
    assert len(CAPTURES) >= 36
    assert {"a", "b", "q_busy_hour", "restart", "utf8_names", "agent_states"} <= set(CAPTURES)


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_matches_ground_truth(name: str) -> None:
    """Every call of the capture is measured as the ground truth says, with no call missing or extra."""
    records = [r.to_dict() for r in replay_capture(name).records]
    result = truth.compare(truth.load(name), records)
    report = "\n".join(f"  {line}" for line in result.mismatches)
    assert not result.mismatches, f"{name}: {len(result.mismatches)} mismatches\n{report}"
    assert result.calls == len(truth.load(name)["calls"]) > 0
    assert result.fields >= 10 * result.calls


# ---------------------------------------------------------------------------------------------
# Named scenarios: the call stories of traces/README.md, key fields asserted directly.


def paired(name: str) -> list[tuple[Json, CallRecord]]:
    """Each truth call of the capture with the record the oracle pairs it with (all must have one)."""
    records = replay_capture(name).records
    by_id = {r.call_id: r for r in records}
    pairs, _ = truth.match_calls(truth.load(name)["calls"], [r.to_dict() for r in records])
    out = []
    for t, r in pairs:
        assert r is not None, f"{name}: no record for truth call {t['call_id']}"
        out.append((t, by_id[r["call_id"]]))
    return out


def only_call(name: str) -> tuple[Json, CallRecord]:
    pairs = paired(name)
    assert len(pairs) == 1, f"{name} holds {len(pairs)} calls"
    return pairs[0]


def rule_set(rec: CallRecord) -> set[str]:
    return set(rec.violations) | set(rec.notices)


def test_a_answered_on_ring_two_caller_hangs_up_no_violation() -> None:
    """A call answered on ring 2 by the queue agent, the caller hanging up first, breaks no rule."""
    t, rec = only_call("a")
    assert rec.outcome is Outcome.ANSWERED
    assert rec.direction is Direction.INBOUND
    assert rec.agent == f"PJSIP/{t['answered_by']}"
    assert rec.rings == t["rings_ceil"] == 2
    assert near(rec.time_to_answer_s, t["seconds_to_answer"])
    assert near(rec.talk_s, t["talk_seconds"])
    assert t["hangup_first"] == "caller"
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert rec.violations == ()
    assert rec.notices == ()
    assert not rec.partial


def test_b_late_answer_and_agent_hangup_break_two_rules() -> None:
    """Answered after ~13 s (ring 5) and hung up by the agent: within_rings, five_rings and agent_first."""
    t, rec = only_call("b")
    assert t["seconds_to_answer"] > 12.0
    assert rec.rings == t["rings_ceil"] == 5
    assert t["hangup_first"] == "agent"
    assert rec.hangup_by is HangupBy.AGENT
    assert rule_set(rec) == {rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS, rules.HANGUP_AGENT_FIRST}


def test_c_ring_no_answer_then_abandon() -> None:
    """1002 rings out (15 s), 1003 rings, the caller gives up at ~20 s: unanswered after a fifth ring."""
    t, rec = only_call("c")
    assert rec.outcome is Outcome.ABANDONED
    assert rec.agent is None
    rang_out = t["ring_attempts"][0]
    assert [r.agent for r in rec.ring_no_answer] == [f"PJSIP/{rang_out['agent']}"]
    assert near(rec.ring_no_answer[0].ring_s, rang_out["ring_seconds"])
    assert near(rec.abandoned_after_s, t["abandon_wait_seconds"])
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert rule_set(rec) == {rules.CALL_UNANSWERED, rules.ANSWER_FIVE_RINGS}


def test_d_short_abandon() -> None:
    """A caller who gives up after ~4 s is abandoned and unanswered, but heard no fifth ring."""
    t, rec = only_call("d")
    assert rec.outcome is Outcome.ABANDONED
    assert near(rec.abandoned_after_s, t["abandon_wait_seconds"])
    assert rec.ring_no_answer == ()  # 1002's ring was cut short by the caller, it did not ring out
    assert rec.violations == (rules.CALL_UNANSWERED,)


def test_a_waiting_caller_whose_hangup_is_unattributed_abandoned() -> None:
    """Without the hangup requests the end is nobody's; a waiting caller is still abandoned, not unanswered.

    The PBX says when it ends a waiting call (system); an unattributed end of a waiting caller is theirs.
    """
    kept = [e for e in events("d") if getattr(e, "name", None) not in ("HangupRequest", "SoftHangupRequest")]
    (rec,) = replay(kept).records
    assert rec.hangup_by is HangupBy.UNKNOWN
    assert rec.outcome is Outcome.ABANDONED
    assert rec.violations == (rules.CALL_UNANSWERED,)


def test_g_hold_over_the_limit() -> None:
    """One hold of ~70 s, longer than the 60 s limit, is the call's only violation."""
    t, rec = only_call("g")
    (want,) = t["holds"]
    (hold,) = rec.holds
    assert near(hold.seconds, want["seconds"])
    assert not hold.consult
    assert not hold.ended_call_on_hold
    assert rec.violations == (rules.HOLD_TOO_LONG,)


def test_i_blind_transfer_answered_is_only_unconfirmed() -> None:
    """A blind transfer that 1004 answers is unconfirmed (the agent left first) but not lost."""
    t, rec = only_call("i")
    (want,) = t["transfers"]
    (transfer,) = rec.transfers
    assert transfer.kind == want["type"] == "blind"
    assert transfer.from_agent == f"PJSIP/{want['from']}"
    assert truth.device(transfer.to) == want["to"]
    assert transfer.target_answered is want["target_answered"] is True
    assert not transfer.confirmed_before_leave
    assert near(transfer.target_answered_at, want["target_answer_epoch"])
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert rec.violations == (rules.TRANSFER_UNCONFIRMED,)


def test_j_blind_transfer_never_answered_is_lost() -> None:
    """A blind transfer to a phone that never answers, the caller hanging up while it rings, is lost."""
    t, rec = only_call("j")
    (want,) = t["transfers"]
    (transfer,) = rec.transfers
    assert truth.device(transfer.to) == want["to"]
    assert transfer.target_answered is want["target_answered"] is False
    assert t["abandoned"]
    assert rec.outcome is Outcome.ANSWERED  # answered by the first agent, lost after the transfer
    assert rule_set(rec) == {rules.TRANSFER_UNCONFIRMED, rules.TRANSFER_LOST}


def test_k_attended_transfer_confirmed_consultation_is_a_hold() -> None:
    """A completed attended transfer whose target answered is confirmed; its consultation is one hold."""
    t, rec = only_call("k")
    (want,) = t["transfers"]
    (transfer,) = rec.transfers
    assert transfer.kind == "attended"
    assert transfer.from_agent == f"PJSIP/{want['from']}"
    assert truth.device(transfer.to) == want["to"]
    assert transfer.target_answered and transfer.confirmed_before_leave
    assert t["holds"] == []  # the agent never pressed hold: the only hold is the consultation
    (hold,) = rec.holds
    assert hold.consult
    assert near(hold.seconds, want["caller_on_moh_by_transfer_seconds"])
    assert rec.violations == ()


def test_l_aborted_consultation_is_a_hold_not_a_transfer() -> None:
    """An attended transfer aborted while the target rings leaves no transfer, only one consult hold."""
    t, rec = only_call("l")
    (want,) = t["transfers"]
    assert want["aborted"]
    assert rec.transfers == ()
    (hold,) = rec.holds
    assert hold.consult
    assert near(hold.seconds, want["caller_on_moh_by_transfer_seconds"])
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert rec.violations == ()


def test_blonde_transfer_without_answer_is_unconfirmed_not_lost() -> None:
    """A blonde transfer nobody answers, recalled to the agent who takes the caller again, is not lost."""
    t, rec = only_call("blonde_transfer_noanswer")
    (want,) = t["transfers"]
    assert want["transferer_hung_up_while_target_ringing"] and not t["abandoned"]
    (transfer,) = rec.transfers
    assert transfer.kind == "attended"
    assert not transfer.target_answered
    assert rec.outcome is Outcome.ANSWERED
    assert rec.agent == f"PJSIP/{t['answered_by']}"
    assert rules.TRANSFER_UNCONFIRMED in rec.violations
    assert rules.TRANSFER_LOST not in rec.violations
    assert rec.hangup_by is HangupBy.CUSTOMER


def test_pickup_credits_the_picker() -> None:
    """A queue call ringing at 1003 and picked up by 1002 is answered by 1002, recorded as picked up."""
    t, rec = only_call("pickup")
    assert t["picked_up_by"] == t["answered_by"] == "1002"
    assert rec.outcome is Outcome.ANSWERED
    assert rec.agent == "PJSIP/1002"
    assert rec.picked_up_by == "PJSIP/1002"
    assert near(rec.time_to_answer_s, t["seconds_to_answer"])


def _member_names(items: tuple[object, ...]) -> dict[str, str]:
    """Queue member interface → MemberName, as the capture's queue events spell them."""
    names = {}
    for ev in items:
        if isinstance(ev, AmiEvent) and ev.get("MemberName") and ev.get("Interface"):
            names[str(ev.get("Interface"))] = str(ev.get("MemberName"))
    return names


def test_pickup_agent_name_is_not_the_rung_members() -> None:
    """After a pickup the record does not name the member who only rang as the agent who answered."""
    _, rec = only_call("pickup")
    names = _member_names(events("pickup"))
    rung, picker = names["PJSIP/1003"], names["PJSIP/1002"]
    assert rec.agent == "PJSIP/1002"
    assert rec.agent_name != rung, f"agent {rec.agent} is named {rec.agent_name!r}, the member that rang"
    assert rec.agent_name in (None, picker)


def test_ivr_abandon_is_not_offered_and_breaks_no_answer_rule() -> None:
    """A caller who hangs up in the IVR before choosing is recorded as not offered, with no answer rule."""
    t, rec = only_call("ivr_abandon")
    assert t["offered_epoch"] is None
    assert rec.outcome is Outcome.NOT_OFFERED
    assert rec.offered_at is None
    assert rec.queue is None
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert rec.violations == ()
    assert rec.notices == ()


def test_restart_ends_calls_by_system_and_a_new_call_follows() -> None:
    """Calls up during a PBX restart end with hangup_by system; the call after the second banner is normal."""
    raw = truth.capture_path("restart").read_bytes()
    banners = raw.count(b"Asterisk Call Manager/")
    assert banners == 2
    result = replay_capture("restart")
    assert result.tracker.stats.stream_starts == banners
    pairs = paired("restart")
    assert [t["hangup_first"] for t, _ in pairs] == ["system", "system", "caller"]
    assert [rec.hangup_by for _, rec in pairs] == [HangupBy.SYSTEM, HangupBy.SYSTEM, HangupBy.CUSTOMER]
    assert all(rec.outcome is Outcome.ANSWERED and not rec.partial for _, rec in pairs)
    assert all(rules.HANGUP_AGENT_FIRST not in rec.violations for _, rec in pairs)


def test_utf8_caller_names_survive() -> None:
    """Chinese caller names, from the phone or set later by the dialplan, reach the record intact."""
    data = truth.load("utf8_names")
    pairs = paired("utf8_names")
    want = {t["caller_number"]: truth.expected_caller_name(t, data["lines"]) for t, _ in pairs}
    got = {t["caller_number"]: rec.caller_name for t, rec in pairs}
    assert got == want
    assert {"张伟", "王芳", "李娜"} <= set(got.values())


def test_mixmonitor_recording_is_linked_to_its_call() -> None:
    """Each recorded call carries the MixMonitor file path its customer channel announced."""
    announced = {
        ev.chan.caller_num: ev.get("Value")
        for ev in events("mixmonitor")
        if isinstance(ev, AmiEvent)
        and ev.name == "VarSet"
        and ev.get("Variable") == "MIXMONITOR_FILENAME"
        and ev.chan is not None
    }
    data = truth.load("mixmonitor")
    pairs = paired("mixmonitor")
    assert len(pairs) == len(data["recording_files_created"]) == 2
    for t, rec in pairs:
        assert rec.recording == announced[t["caller_number"]]
        assert rec.recording is not None
        assert rec.recording.startswith(data["recording_dir"] + "/")
    assert sorted(rec.recording.rsplit("/", 1)[-1] for _, rec in pairs if rec.recording) == sorted(
        data["recording_files_created"]
    )


@pytest.mark.parametrize("name", ["ln_a", "ln_b", "ln_c", "ln_d", "ln_e"])
def test_local_channel_member_agent_is_the_phone_behind_it(name: str) -> None:
    """With Local/100X@from-queue members the agent is the PJSIP phone behind the Local pair."""
    interfaces = {ev.get("Interface") for ev in events(name) if isinstance(ev, AmiEvent) and ev.name == "AgentCalled"}
    assert interfaces
    assert all(str(i).startswith("Local/") for i in interfaces)
    t, rec = only_call(name)
    assert rec.agent == f"PJSIP/{t['answered_by']}"


@pytest.mark.parametrize("name", ["ln_a", "ln_b"])
def test_local_channel_members_states_are_the_agents_of_their_calls(name: str) -> None:
    """Agent-state changes of Local/100X@from-queue members name the phone, as the records do (scorecards join them)."""
    result = replay_capture(name)
    changes = [o for o in result.outputs if isinstance(o, AgentStateChanged)]
    assert changes
    assert all(c.agent.startswith("PJSIP/") for c in changes)
    (rec,) = result.records
    assert rec.agent in {c.agent for c in changes}


@pytest.mark.parametrize(
    ("interface", "state_interface", "agent"),
    [
        ("PJSIP/1001", None, "PJSIP/1001"),
        ("PJSIP/1001", "PJSIP/1001", "PJSIP/1001"),
        ("Local/1001@from-queue/n", "PJSIP/1001", "PJSIP/1001"),
        ("Local/1001@from-queue/n", None, "Local/1001@from-queue/n"),
        ("Local/1001@from-queue/n", "hint:1001@ext-local", "Local/1001@from-queue/n"),
        ("Local/1001@from-queue/n", "Custom:DND1001", "Local/1001@from-queue/n"),
    ],
)
def test_agent_device_of_a_member(interface: str, state_interface: str | None, agent: str) -> None:
    assert agent_device(interface, state_interface) == agent


def test_o_outbound_callback() -> None:
    """An agent's callback to a customer is outbound, credited to that agent, ended by the customer."""
    t, rec = only_call("o")
    assert t["direction"] == "outbound"
    assert rec.direction is Direction.OUTBOUND
    assert rec.outcome is Outcome.ANSWERED
    assert rec.agent == f"PJSIP/{t['plan']['agent']}"
    assert rec.callee == t["dialed"]
    assert t["hangup_first"] == "customer"
    assert rec.hangup_by is HangupBy.CUSTOMER
    assert near(rec.talk_s, t["talk_seconds"])
    assert rec.violations == ()
