"""Calls the bridge joined mid-way (it connected while they were up): measured as far as possible, marked partial."""

from __future__ import annotations

import pytest

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.engine.model import Direction, Outcome

from . import truth
from .captures import events, replay

# (capture, where the bridge starts listening as a fraction of its call events)
CASES = [(name, frac) for name in ("a", "f", "i", "k", "ln_a") for frac in (0.3, 0.5, 0.7)]


@pytest.mark.parametrize(("name", "frac"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_a_call_joined_mid_way_is_one_partial_inbound_answered_record(name: str, frac: float) -> None:
    """Joining a call mid-way yields one partial record for the right caller, inbound and answered."""
    t = truth.load(name)["calls"][0]
    calls = [e for e in events(name) if isinstance(e, AmiEvent) and e.name not in ("VarSet", "Newexten")]
    start = next(i for i, e in enumerate(calls) if e.ts >= t["answer_epoch"] + 0.5)
    start = max(start, int(len(calls) * frac))
    records = [r for r in replay(calls[start:]).records if r.direction is not Direction.INTERNAL]
    assert len(records) == 1, records
    rec = records[0]
    assert rec.partial
    assert rec.direction is Direction.INBOUND
    assert rec.caller == t["caller_number"]
    assert rec.outcome is Outcome.ANSWERED
    assert rec.hangup_by.value == "customer"
    assert rec.talk_s is not None and rec.talk_s >= 0
