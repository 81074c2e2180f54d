"""Find the metric names and label matchers a PromQL expression uses.

Not a PromQL parser: promtool checks the syntax of the rules. This is just enough lexing to list
the series an expression (or a Grafana query, with its ``$variables``) reads, so the tests can
hold alerts, recording rules and the dashboard to the exported metrics contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_STRING_RE = re.compile(_STRING)
# A selector body may hold strings with braces or commas in them.
_SELECTOR_RE = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{((?:[^{}\"']|" + _STRING + r")*)\}")
_MATCHER_RE = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*(" + _STRING + r")")
_GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE_RE = re.compile(r"\[[^\]]*\]")
_GRAFANA_VAR_RE = re.compile(r"\$\{[^}]*\}|\$\w+")
# An identifier not glued to a number or a dot (1e3, 5m and 0.9 are not names).
_IDENT_RE = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")

# Words that are not metric names: binary and grouping keywords, and aggregation operators,
# which may be followed by a grouping clause instead of "(".
KEYWORDS = frozenset(
    (
        *("by", "without", "on", "ignoring", "group_left", "group_right", "bool"),
        *("and", "or", "unless", "offset", "atan2", "inf", "nan", "start", "end"),
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
        *("bottomk", "topk", "quantile", "limitk", "limit_ratio"),
    )
)


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector, e.g. ``outcome=~"abandoned|unanswered"``."""

    metric: str | None
    label: str
    op: str
    value: str


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def matchers(expr: str) -> list[Matcher]:
    """The label matchers of every selector in ``expr``, with the metric name they apply to."""
    found = []
    for m in _SELECTOR_RE.finditer(expr):
        metric = m.group(1)
        for mm in _MATCHER_RE.finditer(m.group(2)):
            found.append(Matcher(metric, mm.group(1), mm.group(2), _unquote(mm.group(3))))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads: bare identifiers that are neither functions nor keywords."""
    text = _SELECTOR_RE.sub(lambda m: f" {m.group(1) or ''} ", expr)
    text = _STRING_RE.sub(" ", text)
    text = _RANGE_RE.sub(" ", text)
    text = _GROUPING_RE.sub(" ", text)
    text = _GRAFANA_VAR_RE.sub(" ", text)
    names = set()
    for m in _IDENT_RE.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    # a selector with only matchers ({__name__="x"}) names its metric in a matcher
    for matcher in matchers(expr):
        if matcher.label == "__name__" and matcher.op == "=":
            names.add(matcher.value)
    return names


def template_queries(text: str) -> list[str]:
    """The PromQL of ``query "..."`` calls inside an alert's Go template annotation."""
    return [_unquote(m.group(1)) for m in re.finditer(r"\bquery\s+(" + _STRING + ")", text)]


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana ``label_values(metric, label)`` variable query."""
    m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)\s*", query)
    return m.group(1) if m else None
