"""Ground truth of the real captures and the comparison every call record must pass.

Our own typed copy of the acceptance oracle (``check_truth.py`` in the shared tools): the same
pairing of truth calls with records, the same checks and the same tolerances, so the suite does
not depend on anything outside the repository. Records are compared in their public JSON form
(``CallRecord.to_dict()``), exactly as the oracle reads ``pbx-bridge replay --format jsonl``.

Tolerances: times ±1 s; a rule verdict whose measured value lies within 1 s of the rule's
threshold is not judged (the boundary is not meaningful there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

Json = Mapping[str, Any]

TRACES: Final = Path(__file__).resolve().parents[1] / "fixtures" / "traces"

TOLERANCE_S: Final = 1.0
RING_S: Final = 3.0
WITHIN_RINGS: Final = 3
FIVE_RINGS: Final = 5
HOLD_LIMIT_S: Final = 60.0
TALK_TARGET_S: Final = 180.0
TALK_MAX_S: Final = 300.0
MATCH_WINDOW_S: Final = 6.0  # a record pairs with a truth call that arrived within this many seconds

# The truth's ``hangup_first`` in the record's vocabulary.
HANGUP_BY: Final = {"caller": "customer", "customer": "customer", "agent": "agent", "system": "system"}


def capture_names() -> list[str]:
    """Names of the captures that have a ground-truth file beside them, sorted."""
    return sorted(p.stem for p in TRACES.glob("*.ami") if p.with_suffix(".json").exists())


def capture_path(name: str) -> Path:
    return TRACES / f"{name}.ami"


@cache
def load(name: str) -> Json:
    """The ground truth of one capture (read once per test session)."""
    data: dict[str, Any] = json.loads((TRACES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def epoch(iso: str | None) -> float | None:
    """ISO 8601 (``Z`` or offset) → epoch seconds; ``None`` stays ``None``."""
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def near(a: float | None, b: float | None, tol: float = TOLERANCE_S) -> bool:
    return a is not None and b is not None and abs(a - b) <= tol


def device(name: str | None) -> str:
    """The endpoint digits of any agent spelling: ``PJSIP/1001``, ``agent1001``, ``Local/1001@q`` → ``1001``."""
    if not name:
        return ""
    parts = [p for p in name.split("/") if p]
    tail = (parts[1] if len(parts) > 1 else parts[0]).split("@")[0].split("-")[0].split(";")[0]
    digits = "".join(ch for ch in tail if ch.isdigit())
    return digits or tail


@dataclass(slots=True)
class Comparison:
    """What comparing records with the truth found: every field checked, every mismatch described."""

    fields: int = 0
    calls: int = 0
    calls_right: int = 0
    mismatches: list[str] = field(default_factory=list)

    def check(self, where: str, what: str, ok: bool, got: object, want: object) -> None:
        self.fields += 1
        if not ok:
            self.mismatches.append(f"{where}: {what}: got {got!r}, want {want!r}")

    def rule_by_threshold(self, where: str, rules: set[str], rule: str, value: float | None, threshold: float) -> None:
        """``rule`` must be present exactly when ``value > threshold`` (not judged near the edge)."""
        if value is None or abs(value - threshold) <= TOLERANCE_S:
            return
        self.rule_present(where, rules, rule, value > threshold, f" (measured {value:.1f})")

    def rule_present(self, where: str, rules: set[str], rule: str, expected: bool, note: str = "") -> None:
        self.check(
            where,
            f"rule {rule}",
            (rule in rules) == expected,
            sorted(rules),
            f"{'with' if expected else 'without'} {rule}{note}",
        )


def _arrival(record: Json) -> float:
    return epoch(record.get("arrived_at")) or 0.0


def match_calls(
    truth_calls: Sequence[Json], records: Sequence[Json]
) -> tuple[list[tuple[Json, Json | None]], list[Json]]:
    """Pair each truth call with the record of the same number that arrived closest (within 6 s).

    Returns the pairs (``None`` when no record fits) and the records left over, internal calls
    (agent to agent) excepted.
    """
    free = list(records)
    pairs: list[tuple[Json, Json | None]] = []
    for t in truth_calls:
        if t.get("direction") == "outbound":
            number = (t.get("plan") or {}).get("number") or t.get("dialed")
        else:
            number = t.get("caller_number")
        arrival = t.get("arrival_epoch") or 0.0
        best: Json | None = None
        best_distance = MATCH_WINDOW_S
        for r in free:
            if number not in (r.get("caller"), r.get("callee")):
                continue
            distance = abs(_arrival(r) - arrival)
            if distance < best_distance:
                best, best_distance = r, distance
        if best is not None:
            free.remove(best)
        pairs.append((t, best))
    return pairs, [r for r in free if r.get("direction") != "internal"]


def expected_caller_name(t: Json, lines: Mapping[str, str] | None) -> str | None:
    """The name the caller's phone sent, unless the dialled line's dialplan sets one itself."""
    sent = t.get("caller_display_name_sent")
    if not sent:
        return None
    dialplan = str((lines or {}).get(t.get("dialed") or "", ""))
    m = re.search(r"CALLERID\(name\)=([^),]+)", dialplan)
    return m.group(1) if m else str(sent)


def expected_holds(t: Json) -> list[dict[str, Any]]:
    """The agent's own holds plus each attended transfer's consultation (the caller held meanwhile)."""
    holds = [dict(h) for h in t.get("holds") or []]
    for x in t.get("transfers") or []:
        if not str(x.get("type", "")).startswith("attended") or not x.get("initiated_epoch"):
            continue
        start = x.get("caller_on_moh_by_transfer_from_epoch") or x["initiated_epoch"]
        end = (
            x.get("caller_on_moh_by_transfer_until_epoch")
            or x.get("completed_epoch")
            or x.get("aborted_epoch")
            or x.get("target_ring_end_epoch")
            or t.get("end_epoch")
        )
        if end:
            holds.append({"start_epoch": start, "end_epoch": end, "seconds": end - start, "consult": True})
    holds.sort(key=lambda h: h["start_epoch"])
    return holds


def expected_ring_no_answer(t: Json) -> list[Json]:
    """Agent phones that rang out: not answered, not picked up, not cut short by a hangup or an answer."""
    end = t.get("end_epoch") or math.inf
    answer = t.get("answer_epoch")
    out = []
    for a in t.get("ring_attempts") or []:
        ring_end = a.get("ring_end_epoch")
        if str(a.get("outcome", "")).startswith(("answered", "cancelled", "picked up")) or not ring_end:
            continue
        if ring_end >= end - 0.1:  # the caller hung up (those rings end ~5 ms after the hangup)
            continue
        if answer and abs(ring_end - answer) < 0.5:  # another phone answered
            continue
        out.append(a)
    return out


def check_call(cmp: Comparison, t: Json, r: Json, lines: Mapping[str, str] | None = None) -> None:
    """Check one record against its truth call (the oracle's ``check_call``)."""
    where = f"{t.get('call_id')} ({t.get('caller_number')})"
    rules = set(r.get("violations") or []) | set(r.get("notices") or [])
    answered = t.get("answer_epoch") is not None
    outbound = t.get("direction") == "outbound"
    # rig3 records when the call was offered; null means it never was (left in the IVR)
    never_offered = "offered_epoch" in t and t["offered_epoch"] is None

    want_name = expected_caller_name(t, lines)
    if want_name is not None:
        cmp.check(where, "caller_name", r.get("caller_name") == want_name, r.get("caller_name"), want_name)
    cmp.check(
        where,
        "outcome",
        (r.get("outcome") == "answered") == answered,
        r.get("outcome"),
        "answered" if answered else "not answered",
    )
    cmp.check(where, "partial", not r.get("partial"), r.get("partial"), False)

    if answered:
        want_agent = (t.get("plan") or {}).get("agent") if outbound else t.get("answered_by")
        if want_agent:
            cmp.check(where, "agent", device(r.get("agent")) == device(want_agent), r.get("agent"), want_agent)

    if answered and not outbound:
        _check_answer_time(cmp, where, t, r, rules)
    if not outbound:
        _check_ring_no_answer(cmp, where, t, r)
        if not answered and never_offered:
            cmp.check(where, "outcome not_offered", r.get("outcome") == "not_offered", r.get("outcome"), "not_offered")
            for rule in ("call.unanswered", "answer.five_rings", "answer.within_rings"):
                cmp.rule_present(where, rules, rule, False)
        elif not answered:
            _check_abandon(cmp, where, t, r, rules)

    _check_holds(cmp, where, t, r, rules, answered)
    lost = _check_transfers(cmp, where, t, r, rules, answered)
    _check_hangup(cmp, where, t, r, rules, answered, lost)

    if answered:
        talk = t.get("talk_seconds")
        cmp.check(where, "talk_s", near(r.get("talk_s"), talk), r.get("talk_s"), talk)
        cmp.rule_by_threshold(where, rules, "duration.over_target", talk, TALK_TARGET_S)
        cmp.rule_by_threshold(where, rules, "duration.over_max", talk, TALK_MAX_S)


def _check_answer_time(cmp: Comparison, where: str, t: Json, r: Json, rules: set[str]) -> None:
    # The answer clock starts when the call is offered (rigs without an IVR: at arrival).
    tta = t.get("seconds_to_answer")
    if t.get("offered_epoch") and t.get("answer_epoch"):
        tta = round(t["answer_epoch"] - t["offered_epoch"], 3)
    cmp.check(where, "time_to_answer_s", near(r.get("time_to_answer_s"), tta), r.get("time_to_answer_s"), tta)
    if tta is None:
        return
    if abs(tta / RING_S - round(tta / RING_S)) * RING_S > TOLERANCE_S:  # not within 1 s of a ring boundary
        cmp.check(where, "rings", r.get("rings") == math.ceil(tta / RING_S), r.get("rings"), math.ceil(tta / RING_S))
    cmp.rule_by_threshold(where, rules, "answer.within_rings", tta, WITHIN_RINGS * RING_S)
    cmp.rule_by_threshold(where, rules, "answer.five_rings", tta, (FIVE_RINGS - 1) * RING_S)


def _check_ring_no_answer(cmp: Comparison, where: str, t: Json, r: Json) -> None:
    want = expected_ring_no_answer(t)
    got = list(r.get("ring_no_answer") or [])
    cmp.check(
        where,
        "ring_no_answer agents",
        [device(x.get("agent")) for x in got] == [device(a.get("agent")) for a in want],
        [x.get("agent") for x in got],
        [a.get("agent") for a in want],
    )
    if len(got) == len(want):
        for i, (g, a) in enumerate(zip(got, want, strict=True), 1):
            cmp.check(
                where,
                f"ring_no_answer {i} ring_s",
                near(g.get("ring_s"), a.get("ring_seconds")),
                g.get("ring_s"),
                a.get("ring_seconds"),
            )


def _check_abandon(cmp: Comparison, where: str, t: Json, r: Json, rules: set[str]) -> None:
    cmp.check(where, "outcome abandoned", r.get("outcome") == "abandoned", r.get("outcome"), "abandoned")
    wait = t.get("abandon_wait_seconds")
    if t.get("offered_epoch") and t.get("end_epoch"):
        wait = round(t["end_epoch"] - t["offered_epoch"], 3)
    cmp.check(where, "abandoned_after_s", near(r.get("abandoned_after_s"), wait), r.get("abandoned_after_s"), wait)
    cmp.rule_present(where, rules, "call.unanswered", True)
    cmp.rule_by_threshold(where, rules, "answer.five_rings", wait, (FIVE_RINGS - 1) * RING_S)


def _check_holds(cmp: Comparison, where: str, t: Json, r: Json, rules: set[str], answered: bool) -> None:
    want = expected_holds(t)
    got = sorted(r.get("holds") or [], key=lambda h: epoch(h.get("start")) or 0.0)
    cmp.check(where, "hold count", len(got) == len(want), len(got), len(want))
    if len(got) == len(want):
        for i, (th, rh) in enumerate(zip(want, got, strict=True), 1):
            seconds = th.get("seconds")
            if seconds is None and th.get("end_epoch") is None:  # ended with the call
                seconds = (t.get("end_epoch") or th["start_epoch"]) - th["start_epoch"]
            cmp.check(where, f"hold {i} seconds", near(rh.get("seconds"), seconds), rh.get("seconds"), seconds)
    if t.get("ended_on_hold") and got:
        cmp.check(
            where,
            "last hold ended_call_on_hold",
            bool(got[-1].get("ended_call_on_hold")),
            got[-1].get("ended_call_on_hold"),
            True,
        )
    if want:
        longest = max(h.get("seconds") or 0.0 for h in want)
        cmp.rule_by_threshold(where, rules, "hold.too_long", longest, HOLD_LIMIT_S)
    elif answered:
        cmp.rule_present(where, rules, "hold.too_long", False)


def _check_transfers(cmp: Comparison, where: str, t: Json, r: Json, rules: set[str], answered: bool) -> bool:
    """Check transfers and their rules; return whether the call was lost after a transfer."""
    want = [x for x in t.get("transfers") or [] if not x.get("aborted")]  # an aborted consultation is none
    got = list(r.get("transfers") or [])
    cmp.check(where, "transfer count", len(got) == len(want), len(got), len(want))
    if len(got) == len(want):
        for i, (tt, rt) in enumerate(zip(want, got, strict=True), 1):
            kind = "attended" if str(tt.get("type", "")).startswith("attended") else tt.get("type")
            cmp.check(where, f"transfer {i} kind", rt.get("kind") == kind, rt.get("kind"), kind)
            to_ok = device(rt.get("to")) == device(tt.get("to"))
            cmp.check(where, f"transfer {i} to", to_ok, rt.get("to"), tt.get("to"))
            cmp.check(
                where,
                f"transfer {i} target_answered",
                bool(rt.get("target_answered")) == bool(tt.get("target_answered")),
                rt.get("target_answered"),
                tt.get("target_answered"),
            )
    # The agent left before anyone at the target answered: every blind transfer, and a blonde
    # transfer (attended, completed while the target still rang) even if the target answered later.
    unconfirmed = any(
        x.get("type") == "blind" or not x.get("target_answered") or x.get("transferer_hung_up_while_target_ringing")
        for x in want
    )
    lost = bool(want) and answered and bool(t.get("abandoned"))
    if answered:
        cmp.rule_present(where, rules, "transfer.unconfirmed", unconfirmed)
        cmp.rule_present(where, rules, "transfer.lost", lost)
    return lost


def _check_hangup(cmp: Comparison, where: str, t: Json, r: Json, rules: set[str], answered: bool, lost: bool) -> None:
    want = HANGUP_BY.get(t.get("hangup_first") or "")
    if want is None:
        return
    cmp.check(where, "hangup_by", r.get("hangup_by") == want, r.get("hangup_by"), want)
    if answered and not lost:
        cmp.rule_present(where, rules, "hangup.agent_first", want == "agent")


def compare(truth: Json, records: Sequence[Json]) -> Comparison:
    """Compare every record of one capture's replay with its ground truth."""
    cmp = Comparison()
    pairs, extra = match_calls(truth["calls"], records)
    for t, r in pairs:
        cmp.calls += 1
        if r is None:
            cmp.mismatches.append(f"{t.get('call_id')} ({t.get('caller_number')}): no record")
            continue
        before = len(cmp.mismatches)
        check_call(cmp, t, r, truth.get("lines"))
        cmp.calls_right += len(cmp.mismatches) == before
    if truth.get("recording_files_created"):
        want = sorted(truth["recording_files_created"])
        got = sorted(Path(r["recording"]).name for r in records if r.get("recording"))
        cmp.check(str(truth.get("scenario")), "recordings linked to calls", got == want, got, want)
    for r in extra:
        cmp.mismatches.append(f"extra record: {r.get('call_id')} caller={r.get('caller')} callee={r.get('callee')}")
    return cmp
