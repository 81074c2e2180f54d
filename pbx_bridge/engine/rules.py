"""Rule ids of the service standard (``SERVICE_STANDARD.md``). They are a public contract:
call records, metric labels, MQTT payloads, alerts, the wallboard and exports all carry them."""

from __future__ import annotations

from typing import Final

ANSWER_WITHIN_RINGS: Final = "answer.within_rings"
ANSWER_FIVE_RINGS: Final = "answer.five_rings"
CALL_UNANSWERED: Final = "call.unanswered"
HOLD_TOO_LONG: Final = "hold.too_long"
TRANSFER_UNCONFIRMED: Final = "transfer.unconfirmed"
TRANSFER_LOST: Final = "transfer.lost"
HANGUP_AGENT_FIRST: Final = "hangup.agent_first"
DURATION_OVER_TARGET: Final = "duration.over_target"
DURATION_OVER_MAX: Final = "duration.over_max"
CALLBACK_OVERDUE: Final = "callback.overdue"
CENTER_UNATTENDED: Final = "center.unattended"
AGENT_COMPLAINTS: Final = "agent.complaints"

PER_CALL: Final = (
    ANSWER_WITHIN_RINGS,
    ANSWER_FIVE_RINGS,
    CALL_UNANSWERED,
    HOLD_TOO_LONG,
    TRANSFER_UNCONFIRMED,
    TRANSFER_LOST,
    HANGUP_AGENT_FIRST,
    DURATION_OVER_TARGET,
    DURATION_OVER_MAX,
)
OVER_TIME: Final = (CALLBACK_OVERDUE, CENTER_UNATTENDED, AGENT_COMPLAINTS)
ALL: Final = PER_CALL + OVER_TIME
# Notices are reported but are not breaches of the standard.
NOTICES: Final = frozenset({DURATION_OVER_TARGET})
