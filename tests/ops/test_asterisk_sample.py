"""asterisk_sample/ is a consistent, least-privilege Asterisk config for pbx-bridge.

The AMI event filters of manager.conf are replayed, with Asterisk's own matching rules
(main/manager.c: should_send_event, filter_cmp_fn), over the real captures in tests/fixtures/traces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "asterisk_sample"
TRACES = REPO / "tests" / "fixtures" / "traces"


# ---------------------------------------------------------------- Asterisk .conf files


@dataclass
class Section:
    name: str
    options: list[str]  # "!" for a template, else the templates it inherits
    entries: list[tuple[str, str]] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)

    def get(self, key: str) -> list[str]:
        return [v for k, v in self.entries if k == key]


def parse_conf(path: Path) -> list[Section]:
    """Sections of an Asterisk config file: [name](options), key = value / key => value, #include."""
    sections: list[Section] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = re.sub(r"(?<!\\);.*", "", raw).strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.fullmatch(r'#(?:try)?include\s+"?([^"]+?)"?', line)
            assert m and sections, f"{path.name}:{lineno}: {raw}"
            sections[-1].includes.append(m.group(1))
        elif line.startswith("["):
            m = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
            assert m, f"{path.name}:{lineno}: {raw}"
            sections.append(Section(m.group(1), [o.strip() for o in (m.group(2) or "").split(",") if o.strip()]))
        else:
            key, sep, value = line.partition("=")
            assert sep and sections, f"{path.name}:{lineno}: {raw}"
            sections[-1].entries.append((key.strip(), value.removeprefix(">").strip()))
    return sections


def section(sections: list[Section], name: str) -> Section:
    found = [s for s in sections if s.name == name]
    assert len(found) == 1, f"[{name}]: {len(found)} sections"
    return found[0]


MANAGER = parse_conf(SAMPLE / "manager.conf")
PJSIP = parse_conf(SAMPLE / "pjsip.conf")
QUEUES = parse_conf(SAMPLE / "queues.conf")
EXTENSIONS = parse_conf(SAMPLE / "extensions.conf")
MODULES = parse_conf(SAMPLE / "modules.conf")
AMI_USER = section(MANAGER, "pbx-bridge")


# ---------------------------------------------------------------- AMI event filters


@dataclass(frozen=True)
class EventFilter:
    exclude: bool
    name: str | None
    header: str | None
    method: str
    pattern: str


def parse_filter(key: str, pattern: str) -> EventFilter:
    """An advanced eventfilter(...) line, as manager_add_filter() reads it."""
    m = re.fullmatch(r"eventfilter\((.*)\)", key)
    assert m, f"not an advanced filter: {key}"
    options = dict(re.findall(r"(\w+)\(([^()]*)\)", m.group(1)))
    assert set(options) <= {"action", "name", "header", "method"}, key
    assert options.get("action", "include") in ("include", "exclude"), key
    method = options.get("method", "none")
    assert method in ("regex", "exact", "starts_with", "ends_with", "contains", "none"), key
    assert (method == "none") == (pattern == ""), f"{key}: method {method} with pattern {pattern!r}"
    assert not pattern.startswith("!"), "a leading ! would make it a legacy exclude"
    return EventFilter(options.get("action") == "exclude", options.get("name"), options.get("header"), method, pattern)


def _match(f: EventFilter, data: str) -> bool:
    if f.method == "regex":
        return re.search(f.pattern, data) is not None
    return {
        "exact": data == f.pattern,
        "starts_with": data.startswith(f.pattern),
        "ends_with": data.endswith(f.pattern),
        "contains": f.pattern in data,
        "none": True,
    }[f.method]


def filter_matches(f: EventFilter, name: str, headers: list[tuple[str, str]]) -> bool:
    if f.name is not None and f.name != name:
        return False
    if f.header is None:
        return _match(f, "".join(f"{k}: {v}\r\n" for k, v in headers))
    # every line that starts with "Header:" is tried, value with leading blanks skipped
    return any(k == f.header and v.strip() and _match(f, v.lstrip()) for k, v in headers)


def should_send(filters: list[EventFilter], name: str, headers: list[tuple[str, str]]) -> bool:
    """Asterisk's rule: no filters, all; includes are an allow-list; then any exclude drops."""
    includes = [f for f in filters if not f.exclude]
    excludes = [f for f in filters if f.exclude]
    if includes and not any(filter_matches(f, name, headers) for f in includes):
        return False
    return not any(filter_matches(f, name, headers) for f in excludes)


FILTERS = [parse_filter(k, v) for k, v in AMI_USER.entries if k.startswith("eventfilter")]
READ = set(AMI_USER.get("read")[0].split(","))


def trace_events() -> list[tuple[str, list[tuple[str, str]]]]:
    """(event name, headers) of every event in the real captures."""
    events = []
    for path in sorted(TRACES.glob("*.ami")):
        text = path.read_bytes().decode("utf-8", "replace")
        for block in text.split("\r\n\r\n"):
            headers = [tuple(line.split(": ", 1)) for line in block.split("\r\n") if ": " in line]
            names = [v for k, v in headers if k == "Event"]
            if names:
                events.append((names[0], headers))
    return events  # type: ignore[return-value]


EVENTS = trace_events()


def delivered(name: str, headers: list[tuple[str, str]]) -> bool:
    """Whether pbx-bridge's AMI user receives this event: read classes, then event filters."""
    privilege = next(v for k, v in headers if k == "Privilege")
    classes = set(privilege.split(",")) - {"all"}
    return classes <= READ and should_send(FILTERS, name, headers)


# ---------------------------------------------------------------- tests: manager.conf


def test_manager_general_turns_on_timestamps() -> None:
    """AMI is on, and every event carries the Timestamp pbx-bridge measures with."""
    general = section(MANAGER, "general")
    assert general.get("enabled") == ["yes"]
    assert general.get("timestampevents") == ["yes"]
    assert general.get("webenabled") == ["no"]


def test_ami_user_is_read_only_least_privilege() -> None:
    """The pbx-bridge user reads call, agent, system and dialplan, and may only run reporting actions."""
    assert [s.name for s in MANAGER] == ["general", "pbx-bridge"]
    assert {"call", "agent", "system", "dialplan"} == READ
    assert AMI_USER.get("write") == ["reporting"]
    assert AMI_USER.get("writetimeout") == ["1000"]
    assert AMI_USER.get("deny") == ["0.0.0.0/0.0.0.0"]
    assert AMI_USER.get("permit")


def test_ami_secret_is_not_in_the_repository() -> None:
    """The secret comes from a file compose renders from the environment, never from manager.conf."""
    assert AMI_USER.get("secret") == []
    assert AMI_USER.includes == ["manager_pbx_bridge_secret.conf"]
    assert not (SAMPLE / "manager_pbx_bridge_secret.conf").exists()
    text = (SAMPLE / "manager.conf").read_text(encoding="utf-8")
    assert not re.search(r"(?m)^\s*secret\s*=", text)


def test_event_filters_are_advanced_excludes_only() -> None:
    """Only advanced exclude filters: an include filter would silently drop every unlisted event."""
    assert FILTERS
    assert all(f.exclude and f.name for f in FILTERS)
    for f in FILTERS:
        if f.method == "regex":
            # Asterisk compiles with POSIX ERE: no (?...) groups, no \d \w \s \b classes
            assert "(?" not in f.pattern
            assert not re.search(r"\\[dDwWsSbB]", f.pattern)
            re.compile(f.pattern)


def test_filters_keep_recording_file_names_and_drop_other_varsets() -> None:
    """VarSet reaches pbx-bridge only for MIXMONITOR_FILENAME, which links a call to its recording."""
    varsets = [(dict(h)["Variable"], delivered(n, h)) for n, h in EVENTS if n == "VarSet"]
    assert sum(var == "MIXMONITOR_FILENAME" for var, _ in varsets) >= 1
    assert all(sent == (var == "MIXMONITOR_FILENAME") for var, sent in varsets), [
        var for var, sent in varsets if sent != (var == "MIXMONITOR_FILENAME")
    ]
    # near misses are dropped too (names starting with MIXMONITOR_ pass: only MixMonitor sets them)
    for var in ("MIXMONITORX", "MIXMON_FILENAME", "MEMBERNAME", "mixmonitor_filename", "__MIXMONITOR_FILENAME"):
        assert not should_send(FILTERS, "VarSet", [("Event", "VarSet"), ("Variable", var)]), var


NOISE = {"VarSet", "Newexten", "RTCPSent", "RTCPReceived", "DTMFBegin", "DTMFEnd", "SuccessfulAuth", "Cdr", "CEL"}
NEEDED = {
    "Newchannel", "Newstate", "Hangup", "HangupRequest", "SoftHangupRequest", "DialBegin", "DialEnd",
    "BridgeCreate", "BridgeEnter", "BridgeLeave", "BridgeDestroy", "BridgeMerge", "Hold", "Unhold",
    "LocalBridge", "LocalOptimizationBegin", "LocalOptimizationEnd", "BlindTransfer", "AttendedTransfer",
    "Pickup", "MusicOnHoldStart", "MusicOnHoldStop", "QueueCallerJoin", "QueueCallerLeave",
    "QueueCallerAbandon", "AgentCalled", "AgentConnect", "AgentComplete", "AgentRingNoAnswer",
    "QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMemberRemoved",
    "MixMonitorStart", "MixMonitorStop", "FullyBooted", "Shutdown", "DeviceStateChange",
}  # fmt: skip


def test_read_classes_and_filters_keep_every_event_the_engine_needs() -> None:
    """Over the real captures, only known noise is lost; every call, queue and system event arrives."""
    seen = Counter(name for name, _ in EVENTS)
    kept = Counter(name for name, headers in EVENTS if delivered(name, headers))
    assert set(seen) >= NEEDED, sorted(NEEDED - set(seen))
    assert set(seen) - set(kept) <= NOISE
    for name in seen:
        if name not in NOISE:
            assert kept[name] == seen[name], name
    # and the noise was most of the traffic
    assert sum(kept.values()) < 0.5 * sum(seen.values())


# ---------------------------------------------------------------- tests: queues, dialplan, SIP, modules

QUEUE_NAMES = {s.name for s in QUEUES if s.name != "general" and "!" not in s.options}
CONTEXTS = {s.name for s in EXTENSIONS} - {"general", "globals"}
ENDPOINTS = {s.name for s in PJSIP if s.get("type") == ["endpoint"] or "agent-endpoint" in s.options}


def _members(queue: str) -> list[str]:
    return [m.split(",")[0] for m in section(QUEUES, queue).get("member")]


def _dialplan_lines() -> list[tuple[str, str]]:
    """(context, application call) of every dialplan step."""
    steps = []
    for s in EXTENSIONS:
        for key, value in s.entries:
            if key == "exten":  # exten => extension,priority,App(args)
                steps.append((s.name, value.split(",", 2)[2]))
            elif key == "same":  # same => priority,App(args)
                steps.append((s.name, value.split(",", 1)[1]))
    return steps


def test_queues_have_pjsip_and_freepbx_style_local_members() -> None:
    """A queue of PJSIP devices and one of FreePBX-style Local/100X@from-queue/n members."""
    assert {"support", "sales", "support-local"} <= QUEUE_NAMES
    for member in _members("support"):
        assert member.startswith("PJSIP/") and member.removeprefix("PJSIP/") in ENDPOINTS
    local = _members("support-local")
    assert local and all(re.fullmatch(r"Local/100\d@from-queue/n", m) for m in local)
    assert "from-queue" in CONTEXTS
    for raw in section(QUEUES, "support-local").get("member"):
        assert raw.split(",")[3].removeprefix("PJSIP/") in ENDPOINTS  # state interface: the real phone


def test_dialplan_queues_and_contexts_exist() -> None:
    """Every Queue() names a queue of queues.conf; every endpoint context exists in the dialplan."""
    used = {m.group(1) for _, app in _dialplan_lines() for m in [re.match(r"Queue\(([^,)]+)", app)] if m}
    assert used and used <= QUEUE_NAMES
    for s in PJSIP:
        for context in s.get("context"):
            assert context in CONTEXTS, f"[{s.name}] context={context}"
    for _, app in _dialplan_lines():
        for target in re.findall(r"(?:Goto|Gosub)\(([\w-]+),", app):
            assert target in CONTEXTS, app


def test_dialplan_records_calls_and_has_an_ivr() -> None:
    """Calls are recorded with MixMonitor(${UNIQUEID}.wav), and line 700 is an IVR into the queues."""
    apps = [app for _, app in _dialplan_lines()]
    assert "MixMonitor(${UNIQUEID}.wav)" in apps
    ivr = [app for context, app in _dialplan_lines() if context == "ivr-main"]
    assert any(app.startswith("Background(") for app in ivr)
    assert any(app.startswith("WaitExten(") for app in ivr)
    assert {"Queue(support,t)", "Queue(sales,t)"} <= set(ivr)


APP_MODULES = {
    "Dial": "app_dial", "Queue": "app_queue", "MixMonitor": "app_mixmonitor", "Playback": "app_playback",
    "PickupChan": "app_directed_pickup", "Gosub": "app_stack", "Return": "app_stack", "ExecIf": "app_exec",
}  # fmt: skip
CORE_APPS = {"NoOp", "Answer", "Hangup", "Goto", "Set", "Background", "WaitExten"}


def test_modules_conf_loads_every_application_the_dialplan_uses() -> None:
    """modules.conf (autoload=no) loads the module of each dialplan application, PJSIP and AMI needs."""
    modules = section(MODULES, "modules")
    assert modules.get("autoload") == ["no"]
    loaded = {m.removesuffix(".so") for m in modules.get("load")}
    for _, app in _dialplan_lines():
        for name in re.findall(r"(?:^|[?(])([A-Z]\w+)\(", app):
            if name in CORE_APPS or name in {"CALLERID", "TIMEOUT", "UNIQUEID"}:
                continue
            assert name in APP_MODULES, f"unknown application {name}: add it to APP_MODULES"
            assert APP_MODULES[name] in loaded, name
    assert {"chan_pjsip", "res_pjsip_registrar", "res_musiconhold", "app_queue", "app_mixmonitor"} <= loaded


def test_sip_passwords_are_placeholders() -> None:
    """No real-looking SIP password is committed: each is an obvious CHANGE-ME placeholder."""
    passwords = [v for s in PJSIP for v in s.get("password")]
    assert passwords
    assert all(p.startswith("CHANGE-ME") for p in passwords)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLE.glob("*.conf")), ids=lambda n: n.removesuffix(".conf"))
def test_readme_explains_each_file(name: str) -> None:
    """asterisk_sample/README.md says what each config file is for."""
    assert f"`{name}`" in (SAMPLE / "README.md").read_text(encoding="utf-8")
