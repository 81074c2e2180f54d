"""``pbx-bridge calls`` and ``pbx-bridge report``: the QA API's data on the command line.

Both read the configured store (SQLite at ``store.path``, or the central PostgreSQL) through
the same queries and reports as the HTTP API, so a QA report on the terminal and one pulled over HTTP
give the same numbers. Options are generated from the API's parameter declarations
(``--talk-min`` is ``talk_min``) and checked by the same code.

This module is imported when the command line starts: everything heavier than argparse is
imported inside the handlers, so ``pbx-bridge replay`` stays quick to start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

if TYPE_CHECKING:
    from pbx_bridge.config import Settings
    from pbx_bridge.store.postgres import PostgresStore
    from pbx_bridge.store.sqlite import SqliteStore
    from pbx_bridge.web.api import QaQueries
    from pbx_bridge.web.openapi import Param

FORMATS: Final = ("table", "csv", "json")
EXIT_BAD_PARAMETER: Final = 2
REPORTS: Final = {
    # report name → the API operation whose parameters it takes
    "scorecard": "getScorecards",
    "intervals": "getIntervals",
    "callbacks": "getCallbacks",
    "service-level": "getServiceLevel",
}
SCORECARD_COLUMNS: Final = (
    "key",
    "name",
    "calls",
    "answered",
    "abandoned",
    "within_rings_pct",
    "avg_time_to_answer_s",
    "holds",
    "holds_over_limit",
    "unconfirmed_transfers",
    "agent_hung_up_first",
    "over_talk_max",
    "complaints",
    "complaints_breached",
    "logged_in_s",
    "paused_s",
    "paused_by_reason",
)
INTERVAL_COLUMNS: Final = (
    "label",
    "utc_offset",
    "offered",
    "answered",
    "abandoned",
    "unanswered",
    "within_rings",
    "within_rings_pct",
    "avg_wait_s",
    "after_hours",
)
CALLBACK_COLUMNS: Final = ("number", "queue", "first_call_at", "attempts", "deadline", "overdue", "first_call_id")
LEVEL_COLUMNS: Final = ("id", "name", "formula", "numerator", "denominator", "percent")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_params(parser: argparse.ArgumentParser, params: Iterable[Param]) -> None:
    """One option per API parameter, its value left as text for the API's own checks."""
    from pbx_bridge.web.openapi import Kind  # noqa: PLC0415 -- keeps `pbx-bridge replay` quick to start

    for param in params:
        if param.where == "path":
            continue
        dest = f"p_{param.name}"
        if param.kind is Kind.BOOLEAN and param.default is False:
            flag = _option(param.name)
            parser.add_argument(flag, dest=dest, action="store_const", const="true", help=param.description)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "help": param.description}
        if param.kind is Kind.CHOICE:
            kwargs["choices"] = param.choices
        elif param.kind is Kind.BOOLEAN:
            kwargs["choices"] = ("true", "false")
        else:
            kwargs["metavar"] = param.kind.value.upper()
        parser.add_argument(_option(param.name), **kwargs)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: built-in defaults)")
    parser.add_argument("--log-level", default="WARNING", help="log level; logs go to stderr (default: WARNING)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table for the terminal; csv for Excel (UTF-8 with BOM, like the API's /calls.csv); json as the API",
    )


def add_parsers(subparsers: Any) -> None:
    """Add ``calls`` and ``report`` to the ``pbx-bridge`` sub-commands (``add_subparsers()``'s result)."""
    from pbx_bridge.web.openapi import OPERATIONS  # noqa: PLC0415 -- see the module docstring

    ops = {op.operation_id: op for op in OPERATIONS}
    calls = subparsers.add_parser("calls", help="list stored calls (the same filters as GET /api/v1/calls)")
    _add_params(calls, ops["listCalls"].params)
    calls.add_argument("--all", action="store_true", help="every matching call (as /calls.csv), not one page")
    _common(calls)

    report = subparsers.add_parser("report", help="QA and staffing reports from the store")
    kinds = report.add_subparsers(dest="report", required=True)
    helps = {
        "scorecard": "per-agent or per-queue scorecards of a day, week or month",
        "intervals": "half-hour staffing report of one day",
        "callbacks": "callers still waiting for a call back (callback.overdue)",
        "service-level": "service level under the four standard formulas",
    }
    for name, operation_id in REPORTS.items():
        sub = kinds.add_parser(name, help=helps[name])
        _add_params(sub, ops[operation_id].params)
        _common(sub)


def _raw(args: argparse.Namespace, params: Iterable[Param]) -> dict[str, list[str]]:
    return {
        p.name: [value]
        for p in params
        if p.where == "query" and (value := getattr(args, f"p_{p.name}", None)) is not None
    }


def _flat_rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a table or CSV: nested mappings become ``key=value;...``."""
    out: list[dict[str, Any]] = []
    for item in items:
        row = dict(item)
        for key, value in item.items():
            if isinstance(value, Mapping):
                row[key] = ";".join(f"{k}={v}" for k, v in value.items())
        out.append(row)
    return out


def _write_rows(out: TextIO, fmt: str, rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...]) -> None:
    import csv  # noqa: PLC0415 -- see the module docstring

    from pbx_bridge.export import to_table  # noqa: PLC0415

    flat = _flat_rows(rows)
    if fmt == "table":
        out.write(to_table(flat, columns))
        return
    out.write("\ufeff")  # Excel reads UTF-8 only with the BOM
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in flat:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def _write_json(out: TextIO, data: Any) -> None:
    import json  # noqa: PLC0415

    out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


async def _calls(queries: QaQueries, args: argparse.Namespace, out: TextIO) -> None:
    from pbx_bridge.export import to_csv, to_table  # noqa: PLC0415
    from pbx_bridge.web.openapi import OPERATIONS, Query, call_filter  # noqa: PLC0415

    op = next(o for o in OPERATIONS if o.operation_id == "listCalls")
    query = Query(op.params, _raw(args, op.params), queries.calendar)
    f = call_filter(query)
    if args.all:
        items, total = await queries.export(f)
        page: dict[str, Any] = {"items": items, "total": total, "limit": len(items), "offset": 0}
    else:
        page = await queries.page(f, query.integer("limit"), query.integer("offset"))
    if args.format == "json":
        _write_json(out, page)
    elif args.format == "csv":
        from pbx_bridge.web.api import excel_safe  # noqa: PLC0415

        out.write(to_csv([excel_safe(row) for row in page["items"]], bom=True))
    else:
        out.write(to_table(page["items"]))
        shown = len(page["items"])
        print(f"calls: {shown} of {page['total']} (offset {page['offset']})", file=sys.stderr)


async def _report(queries: QaQueries, args: argparse.Namespace, out: TextIO) -> None:
    from pbx_bridge import reports  # noqa: PLC0415
    from pbx_bridge.web.openapi import OPERATIONS, BadParameter, Query  # noqa: PLC0415

    op = next(o for o in OPERATIONS if o.operation_id == REPORTS[args.report])
    q = Query(op.params, _raw(args, op.params), queries.calendar)
    data: dict[str, Any]
    columns: tuple[str, ...]
    if args.report == "scorecard":
        kind, by = reports.PeriodKind(q.pick("period")), reports.GroupBy(q.pick("by"))
        data = (await queries.scorecards(kind, q.day("date") or queries.today(), by)).to_dict()
        rows, columns = data["items"], SCORECARD_COLUMNS
    elif args.report == "intervals":
        data = (await queries.intervals(q.day("date") or queries.today(), q.text("queue"))).to_dict()
        rows, columns = data["items"], INTERVAL_COLUMNS
    elif args.report == "callbacks":
        data = await queries.callbacks(q.time("since"), bool(q.flag("overdue")))
        rows, columns = data["items"], CALLBACK_COLUMNS
    else:
        start, end = queries.default_range(q.time("start"), q.time("end", end_of_day=True))
        if end < start:
            raise BadParameter("end", "is before start")
        data = (await queries.service_level(start, end, q.text("queue"))).to_dict()
        rows, columns = data["levels"], LEVEL_COLUMNS
    if args.format == "json":
        _write_json(out, data)
    else:
        _write_rows(out, args.format, rows, columns)


def _store(settings: Settings) -> SqliteStore | PostgresStore:
    from pbx_bridge.config import StoreBackend  # noqa: PLC0415
    from pbx_bridge.errors import StoreError  # noqa: PLC0415
    from pbx_bridge.service import SQLITE_FILE, make_store  # noqa: PLC0415

    cfg = settings.store
    path = cfg.path / SQLITE_FILE
    if cfg.backend is StoreBackend.SQLITE and not path.is_file():
        # Opening would create an empty store: say where we looked instead.
        raise StoreError(f"no call store at {path}: run the daemon first, or point store.path at its data")
    # make_store builds one of these two; PostgresStore is not imported here (asyncpg is optional).
    return cast("SqliteStore | PostgresStore", make_store(settings))


def _configure_logs(level: str) -> None:
    """Logs to stderr: stdout carries the table, CSV or JSON and nothing else."""
    from pbx_bridge.logs import configure  # noqa: PLC0415

    configure(level)


def _run(args: argparse.Namespace, work: Callable[[QaQueries, argparse.Namespace, TextIO], Any]) -> int:
    import asyncio  # noqa: PLC0415

    from pbx_bridge.config import load_settings  # noqa: PLC0415
    from pbx_bridge.web.api import QaQueries  # noqa: PLC0415
    from pbx_bridge.web.openapi import BadParameter  # noqa: PLC0415

    _configure_logs(args.log_level)
    settings = load_settings(args.config)

    async def main() -> None:
        async with _store(settings) as store:
            await work(QaQueries(store, settings), args, sys.stdout)

    try:
        asyncio.run(main())
    except BadParameter as exc:
        print(f"pbx-bridge: error: {_option(exc.parameter)}: {exc.reason}", file=sys.stderr)
        return EXIT_BAD_PARAMETER
    sys.stdout.flush()
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    """``pbx-bridge calls``: stored calls matching the filters."""
    return _run(args, _calls)


def cmd_report(args: argparse.Namespace) -> int:
    """``pbx-bridge report KIND``: a scorecard, interval, callback or service-level report."""
    return _run(args, _report)


COMMANDS: Final[Mapping[str, Callable[[argparse.Namespace], int]]] = {"calls": cmd_calls, "report": cmd_report}
