"""Call records as JSON lines, CSV (Excel-friendly) or a terminal table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

FORMATS: Final = ("jsonl", "csv", "table")
# Flat columns for CSV and tables; lists are summarised (counts) or joined with ';'.
CSV_COLUMNS: Final = (
    "call_id",
    "direction",
    "caller",
    "caller_name",
    "callee",
    "queue",
    "agent",
    "agent_name",
    "arrived_at",
    "offered_at",
    "answered_at",
    "ended_at",
    "time_to_answer_s",
    "rings",
    "outcome",
    "abandoned_after_s",
    "talk_s",
    "hold_count",
    "hold_total_s",
    "hold_max_s",
    "transfers",
    "ring_no_answer",
    "hangup_by",
    "after_hours",
    "recording",
    "violations",
    "notices",
    "partial",
)
TABLE_COLUMNS: Final = (
    "arrived_at",
    "caller",
    "queue",
    "agent",
    "outcome",
    "time_to_answer_s",
    "talk_s",
    "hold_count",
    "hangup_by",
    "violations",
)


def _flat(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if key == "transfers":
        return ";".join(f"{t['kind']}:{t.get('to') or '?'}" for t in value or [])
    if key == "ring_no_answer":
        return ";".join(str(r["agent"]) for r in value or [])
    if isinstance(value, list):
        return ";".join(map(str, value))
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def jsonl_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def to_csv(records: Iterable[Mapping[str, Any]], bom: bool = True) -> str:
    """CSV that Excel opens correctly with Chinese text: UTF-8 with a BOM, CRLF, all quoted when needed."""
    buf = io.StringIO()
    if bom:
        buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([_flat(r, k) for k in CSV_COLUMNS])
    return buf.getvalue()


def to_table(records: Iterable[Mapping[str, Any]], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    rows = [[_flat(r, k) for k in columns] for r in records]
    widths = [max([len(c)] + [_width(row[i]) for row in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(_pad(v, w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines) + "\n"


def _width(text: str) -> int:
    # CJK characters take two terminal cells.
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
