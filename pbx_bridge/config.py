"""Settings: one typed, frozen object loaded once from a TOML file and the environment.

Precedence, lowest first: built-in defaults (equal to SERVICE_STANDARD.md), the TOML file, then
``PBX_BRIDGE_<SECTION>_<KEY>`` environment variables (scalar keys only). Secrets -- the AMI secret, the
MQTT password, the Postgres DSN and the API tokens -- come only from environment variables or secret
files, never from the TOML file, and are kept out of ``repr()``. Every problem raises ``ConfigError``
naming the key and where its value came from.
"""

from __future__ import annotations

import difflib
import hmac
import math
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar, get_type_hints
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pbx_bridge.engine.hours import DEFAULT_TIMEZONE, CalendarSet, MonthDay, Period, Season, ServiceCalendar
from pbx_bridge.engine.policy import Policy, PolicySet
from pbx_bridge.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX: Final = "PBX_BRIDGE_"
MIN_TOKEN_LENGTH: Final = 16

_SECTIONS: Final = ("ami", "pbx", "policy", "hours", "store", "http", "mqtt", "wallboard", "api")
_HOURS_KEYS: Final = (
    "winter",
    "summer",
    "winter_start",
    "summer_start",
    "holidays",
    "extra_working_days",
    "closed_weekdays",
)
_HOURS_SCALARS: Final = ("winter_start", "summer_start")
_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_MAX_PORT: Final = 65535
_MAX_RANGE_DAYS: Final = 366

_S = TypeVar("_S", bound="DataclassInstance")


class StoreBackend(StrEnum):
    """Where call records are kept."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


class WallboardLang(StrEnum):
    """Language of the wallboard."""

    ZH_CN = "zh-CN"
    EN = "en"


class ApiRole(StrEnum):
    """What an API token may do."""

    WALLBOARD = "wallboard"
    QA = "qa"  # quality assurance staff (质检员)
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class AmiSettings:
    """``[ami]``: the Asterisk Manager Interface connection."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "pbx-bridge"
    secret_env: str = "PBX_BRIDGE_AMI_SECRET"  # noqa: S105 -- the variable's name, not a secret
    secret_file: Path | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 5.0
    action_timeout_s: float = 10.0
    queue_size: int = 10000
    secret: str | None = field(
        default=None,
        repr=False,
        metadata={"secret": "set the environment variable named by ami.secret_env or ami.secret_file"},
    )


@dataclass(frozen=True, slots=True)
class PbxSettings:
    """``[pbx]``: facts about the Asterisk deployment."""

    internal_endpoints: str = r"^\d{2,6}$"
    timezone: str = DEFAULT_TIMEZONE

    @property
    def endpoint_re(self) -> re.Pattern[str]:
        """Compiled ``internal_endpoints`` (``re`` caches compiled patterns, so this is cheap)."""
        return re.compile(self.internal_endpoints)

    @property
    def zone(self) -> ZoneInfo:
        """The deployment's time zone."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """``[store]``: the call store."""

    backend: StoreBackend = StoreBackend.SQLITE
    path: Path = Path("data")
    dsn_env: str = "PBX_BRIDGE_STORE_DSN"
    retention_days: int = 365
    batch_interval_s: float = 1.0
    dsn: str | None = field(
        default=None,
        repr=False,
        metadata={"secret": "set the environment variable named by store.dsn_env"},
    )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``[http]``: the HTTP server (API, wallboard, metrics)."""

    listen: str = "127.0.0.1:8080"

    @property
    def host(self) -> str:
        """Host part of ``listen`` (without IPv6 brackets)."""
        return _split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """Port part of ``listen``."""
        return _split_host_port(self.listen)[1]


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[mqtt]``: publishing calls and alerts to an MQTT broker."""

    enabled: bool = False
    url: str = "mqtt://localhost:1883"
    prefix: str = "pbx-bridge"
    site: str = "default"
    username: str | None = None
    password_env: str = "PBX_BRIDGE_MQTT_PASSWORD"  # noqa: S105 -- the variable's name, not a password
    tls: bool = False
    ca_file: Path | None = None
    mask_numbers: bool = True
    password: str | None = field(
        default=None,
        repr=False,
        metadata={"secret": "set the environment variable named by mqtt.password_env"},
    )

    @property
    def host(self) -> str:
        """Broker host from ``url``."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Broker port from ``url`` (1883, or 8883 with TLS, when the URL has none)."""
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)

    @property
    def use_tls(self) -> bool:
        """Whether to connect with TLS (``tls = true`` or an ``mqtts://`` URL)."""
        return self.tls or urlsplit(self.url).scheme == "mqtts"


@dataclass(frozen=True, slots=True)
class WallboardSettings:
    """``[wallboard]``: the live board."""

    lang: WallboardLang = WallboardLang.ZH_CN
    mask_numbers: bool = True
    title: str = "pbx-bridge"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One bearer token and the role it grants."""

    role: ApiRole
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: bearer tokens of the HTTP API, and where QA staff play recordings from."""

    tokens_env: str = "PBX_BRIDGE_API_TOKENS"
    tokens_file: Path | None = None
    # A recording under recordings_dir is linked as recordings_url + its path below that folder.
    recordings_dir: str = "/var/spool/asterisk/monitor"
    recordings_url: str = ""
    tokens: tuple[ApiToken, ...] = field(
        default=(),
        repr=False,
        metadata={"secret": "set the environment variable named by api.tokens_env or api.tokens_file"},
    )

    def role_for(self, presented: str) -> ApiRole | None:
        """The role of a presented token, or ``None``; compares in constant time."""
        found: ApiRole | None = None
        for entry in self.tokens:
            # Check every token so the time taken does not reveal which one (or how much) matched.
            if hmac.compare_digest(entry.token.encode(), presented.encode()):
                found = entry.role
        return found

    def recording_link(self, recording: str | None) -> str | None:
        """Where a call's recording is played from: a URL when ``recordings_url`` is set and the
        file lies under ``recordings_dir``, else the file as Asterisk named it."""
        if not recording or not self.recordings_url:
            return recording
        folder = self.recordings_dir.rstrip("/") + "/"
        if not recording.startswith(folder):
            return recording
        return self.recordings_url.rstrip("/") + "/" + quote(recording[len(folder) :])


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything pbx-bridge is configured with; build it with ``load_settings``."""

    ami: AmiSettings = field(default_factory=AmiSettings)
    pbx: PbxSettings = field(default_factory=PbxSettings)
    policies: PolicySet = field(default_factory=PolicySet)
    calendars: CalendarSet = field(default_factory=CalendarSet)
    store: StoreSettings = field(default_factory=StoreSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    wallboard: WallboardSettings = field(default_factory=WallboardSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    source: Path | None = field(default=None, compare=False)  # the file loaded, for logs

    def redacted(self) -> dict[str, dict[str, object]]:
        """The plain sections as data safe to log: each secret shows only whether it is set."""
        out: dict[str, dict[str, object]] = {}
        for section in (self.ami, self.pbx, self.store, self.http, self.mqtt, self.wallboard, self.api):
            name = type(section).__name__.removesuffix("Settings").lower()
            values: dict[str, object] = {}
            for spec in fields(section):
                value = getattr(section, spec.name)
                if spec.metadata.get("secret"):
                    values[spec.name] = "<set>" if value else "<unset>"
                else:
                    values[spec.name] = str(value) if isinstance(value, Path | StrEnum) else value
            out[name] = values
        return out


def load_settings(path: Path | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Load settings from a TOML file (``None``: defaults only) and ``PBX_BRIDGE_*`` variables in ``env``.

    Raises:
        ConfigError: the file is unreadable or any value is invalid; the message names the key.
    """
    ctx = _Context(path, {})
    document = _read_toml(path) if path is not None else {}
    raw: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    for name, value in document.items():
        if name not in _SECTIONS:
            ctx.fail(f"[{name}]", f"unknown section{_did_you_mean(name, _SECTIONS)}")
        if not isinstance(value, dict):
            ctx.fail(name, f"must be a table ([{name}]), got {_show(value)}")
        raw[name] = dict(value)
    _apply_env(raw, env, ctx)

    ami = _resolve_ami(_check_ami(_build(AmiSettings(), raw["ami"], "ami", ctx), ctx), env, ctx)
    pbx = _check_pbx(_build(PbxSettings(), raw["pbx"], "pbx", ctx), ctx)
    policies = _build_policies(raw["policy"], ctx)
    calendars = _build_calendars(raw["hours"], pbx.zone, ctx)
    store = _check_store(_build(StoreSettings(), raw["store"], "store", ctx), env, ctx)
    http = _check_http(_build(HttpSettings(), raw["http"], "http", ctx), ctx)
    mqtt = _check_mqtt(_build(MqttSettings(), raw["mqtt"], "mqtt", ctx), env, ctx)
    wallboard = _build(WallboardSettings(), raw["wallboard"], "wallboard", ctx)
    api = _resolve_api(_build(ApiSettings(), raw["api"], "api", ctx), env, ctx)
    _reject_unknown_env(env, (ami.secret_env, store.dsn_env, mqtt.password_env, api.tokens_env))
    return Settings(ami, pbx, policies, calendars, store, http, mqtt, wallboard, api, source=path)


# --- reading and error reporting ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EnvValue:
    """A value taken from an environment variable, still text until its field's type is known."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class _Context:
    """Where values came from, so that every error can say so."""

    file: Path | None
    env_names: dict[str, str]  # dotted key -> environment variable that set it

    def where(self, *keys: str) -> str:
        """Where the values of ``keys`` came from: environment variables, the file, or the defaults."""
        names = [self.env_names[key] for key in keys if key in self.env_names]
        places = [f"from environment variable {name}" for name in dict.fromkeys(names)]
        if len(names) < len(keys):
            places.append(f"in {self.file}" if self.file is not None else "in the built-in defaults")
        return "; ".join(places)

    def fail(
        self, key: str, reason: str, cause: BaseException | None = None, also: tuple[str, ...] = ()
    ) -> NoReturn:
        """Raise ``ConfigError`` for ``key``; ``also`` lists other keys whose values the check involved."""
        raise ConfigError(f"{key}: {reason} ({self.where(key, *also)})") from cause


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _show(value: object) -> str:
    """A value as the user wrote it, for error messages (never called on secrets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value) if isinstance(value, str) else str(value)


def _did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _scalar_keys(section: str) -> tuple[str, ...]:
    """Keys of a section that an environment variable may override."""
    schema: dict[str, DataclassInstance] = {
        "ami": AmiSettings(),
        "pbx": PbxSettings(),
        "policy": Policy(),
        "store": StoreSettings(),
        "http": HttpSettings(),
        "mqtt": MqttSettings(),
        "wallboard": WallboardSettings(),
        "api": ApiSettings(),
    }
    if section == "hours":
        return _HOURS_SCALARS
    return tuple(spec.name for spec in fields(schema[section]) if not spec.metadata.get("secret"))


def _apply_env(raw: dict[str, dict[str, object]], env: Mapping[str, str], ctx: _Context) -> None:
    for section in _SECTIONS:
        for key in _scalar_keys(section):
            name = _env_name(section, key)
            if name in env:
                raw[section][key] = _EnvValue(name, env[name])
                ctx.env_names[f"{section}.{key}"] = name


def _reject_unknown_env(env: Mapping[str, str], secret_names: tuple[str, ...]) -> None:
    """Reject ``PBX_BRIDGE_<SECTION>_*`` variables that set nothing, so a typo does not go unnoticed."""
    known = set(secret_names)
    for section in _SECTIONS:
        known.update(_env_name(section, key) for key in _scalar_keys(section))
    for name in env:
        for section in _SECTIONS:
            prefix = _env_name(section, "")
            if name.startswith(prefix) and name not in known:
                key = f"{section}.{name.removeprefix(prefix).lower()}"
                hint = _did_you_mean(name, sorted(n for n in known if n.startswith(prefix)))
                raise ConfigError(
                    f"{key}: environment variable {name} matches no scalar key of [{section}]{hint}; "
                    "lists and per-queue tables can only be set in the config file"
                )


# --- generic typed sections -----------------------------------------------------------------------


def _build(base: _S, table: Mapping[str, object], prefix: str, ctx: _Context) -> _S:
    """``base`` with the keys of ``table`` applied, each checked against its field's type."""
    specs = {spec.name: spec for spec in fields(base)}
    hints = get_type_hints(type(base))
    changes: dict[str, object] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}"
        spec = specs.get(key)
        if spec is None:
            names = [name for name, s in specs.items() if not s.metadata.get("secret")]
            ctx.fail(full, f"unknown key{_did_you_mean(key, names)}")
        if spec.metadata.get("secret"):
            # The value is deliberately not echoed: it is a secret sitting in a file that should not hold one.
            ctx.fail(full, f"secrets are never read from the config file; {spec.metadata['secret']}")
        changes[key] = _coerce(value, hints[key], full, ctx)
    return replace(base, **changes)


def _coerce(value: object, hint: object, key: str, ctx: _Context) -> object:
    """Check a TOML or environment value against a field type, returning the typed value."""
    if isinstance(value, _EnvValue):
        value = _parse_env(value.text, hint, key, ctx)
        if value is None:
            return None
    if isinstance(hint, types.UnionType):  # only ``X | None`` fields exist
        (inner,) = (arg for arg in hint.__args__ if arg is not type(None))
        return _coerce(value, inner, key, ctx)
    if hint is bool:
        if not isinstance(value, bool):
            ctx.fail(key, f"must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            ctx.fail(key, f"must be a positive integer, got {_show(value)}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            ctx.fail(key, f"must be a number, got {_show(value)}")
        if value <= 0:
            ctx.fail(key, f"must be a positive number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            ctx.fail(key, f"must be a string, got {_show(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            ctx.fail(key, f"must be a non-empty path, got {_show(value)}")
        return Path(value)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        choices = [member.value for member in hint]
        if value not in choices:
            ctx.fail(key, f"must be one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return hint(value)
    raise TypeError(f"no coercion for {key}: {hint!r}")  # a new field type needs a case here


def _parse_env(text: str, hint: object, key: str, ctx: _Context) -> object:
    """Turn environment text into the Python value a TOML file would have given."""
    if isinstance(hint, types.UnionType):
        if text == "":
            return None  # an empty variable unsets an optional key
        (hint,) = (arg for arg in hint.__args__ if arg is not type(None))
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        ctx.fail(key, f"must be true or false, got {text!r}")
    if hint is int:
        try:
            return int(text.strip())
        except ValueError:
            ctx.fail(key, f"must be a positive integer, got {text!r}")
    if hint is float:
        try:
            return float(text.strip())
        except ValueError:
            ctx.fail(key, f"must be a number, got {text!r}")
    return text


def _check(ok: bool, key: str, reason: str, ctx: _Context, also: tuple[str, ...] = ()) -> None:
    if not ok:
        ctx.fail(key, reason, also=also)


def _check_env_name(value: str, key: str, ctx: _Context) -> None:
    _check(
        bool(_ENV_NAME_RE.fullmatch(value)), key, f"must be an environment variable name, got {value!r}", ctx
    )


def _read_secret_file(path: Path, key: str, ctx: _Context) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        ctx.fail(key, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", exc)
    _check(bool(text), key, f"{path} is empty", ctx)
    return text


# --- sections ---------------------------------------------------------------------------------------


def _check_ami(ami: AmiSettings, ctx: _Context) -> AmiSettings:
    _check(bool(ami.host.strip()), "ami.host", "must not be empty", ctx)
    _check(ami.port <= _MAX_PORT, "ami.port", f"must be a TCP port (1-65535), got {ami.port}", ctx)
    _check(bool(ami.username), "ami.username", "must not be empty", ctx)
    _check_env_name(ami.secret_env, "ami.secret_env", ctx)
    _check(
        ami.reconnect_min_s <= ami.reconnect_max_s,
        "ami.reconnect_max_s",
        f"must be at least ami.reconnect_min_s ({ami.reconnect_max_s} < {ami.reconnect_min_s})",
        ctx,
        also=("ami.reconnect_min_s",),
    )
    _check(
        ami.ping_timeout_s < ami.ping_interval_s,
        "ami.ping_timeout_s",
        f"must be less than ami.ping_interval_s ({ami.ping_timeout_s} >= {ami.ping_interval_s})",
        ctx,
        also=("ami.ping_interval_s",),
    )
    return ami


def _resolve_ami(ami: AmiSettings, env: Mapping[str, str], ctx: _Context) -> AmiSettings:
    """Attach the AMI secret: the environment variable wins over the file, as env wins everywhere."""
    secret = env.get(ami.secret_env) or None  # an empty variable counts as unset
    if secret is None and ami.secret_file is not None:
        secret = _read_secret_file(ami.secret_file, "ami.secret_file", ctx)
    # A missing secret is not an error here: replays and demos never log in to Asterisk.
    return replace(ami, secret=secret)


def _check_pbx(pbx: PbxSettings, ctx: _Context) -> PbxSettings:
    try:
        re.compile(pbx.internal_endpoints)
    except re.error as exc:
        reason = f"invalid regular expression {pbx.internal_endpoints!r}: {exc}"
        ctx.fail("pbx.internal_endpoints", reason, exc)
    try:
        ZoneInfo(pbx.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        ctx.fail(
            "pbx.timezone",
            f"unknown IANA time zone {pbx.timezone!r} (is the tz database installed?)",
            exc,
        )
    return pbx


def _build_policies(table: Mapping[str, object], ctx: _Context) -> PolicySet:
    queues_raw = table.get("queues", {})
    default = _check_policy(_build(Policy(), _without(table, "queues"), "policy", ctx), "policy", ctx)
    queues: dict[str, Policy] = {}
    for name, qtable in _queue_tables(queues_raw, "policy.queues", ctx).items():
        prefix = f"policy.queues.{name}"
        # A queue inherits every key it does not set from [policy] (after environment overrides).
        queues[name] = _check_policy(_build(default, qtable, prefix, ctx), prefix, ctx)
    return PolicySet(default, queues)


def _check_policy(policy: Policy, prefix: str, ctx: _Context) -> Policy:
    def related(*names: str) -> tuple[str, ...]:
        # A queue's values may be inherited from [policy], whose values may come from the environment.
        return tuple(dict.fromkeys(f"{p}.{n}" for n in names for p in (prefix, "policy")))

    _check(
        policy.rings_limit < policy.rings_apology,
        f"{prefix}.rings_limit",
        f"must be less than rings_apology ({policy.rings_limit} >= {policy.rings_apology})",
        ctx,
        also=related("rings_limit", "rings_apology"),
    )
    _check(
        policy.hold_warn_s < policy.hold_limit_s,
        f"{prefix}.hold_warn_s",
        f"must be less than hold_limit_s ({policy.hold_warn_s} >= {policy.hold_limit_s})",
        ctx,
        also=related("hold_warn_s", "hold_limit_s"),
    )
    _check(
        policy.talk_target_s <= policy.talk_max_s,
        f"{prefix}.talk_target_s",
        f"must not exceed talk_max_s ({policy.talk_target_s} > {policy.talk_max_s})",
        ctx,
        also=related("talk_target_s", "talk_max_s"),
    )
    return policy


def _without(table: Mapping[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in table.items() if k != key}


def _queue_tables(value: object, prefix: str, ctx: _Context) -> dict[str, Mapping[str, object]]:
    if not isinstance(value, dict):
        ctx.fail(prefix, f"must be a table of queue tables ([{prefix}.<queue>]), got {_show(value)}")
    out: dict[str, Mapping[str, object]] = {}
    for name, table in value.items():
        if not name.strip():
            ctx.fail(f"{prefix}.{name!r}", "queue name must not be empty")
        if not isinstance(table, dict):
            ctx.fail(f"{prefix}.{name}", f"must be a table, got {_show(table)}")
        out[name] = table
    return out


def _build_calendars(table: Mapping[str, object], zone: ZoneInfo, ctx: _Context) -> CalendarSet:
    default = _build_calendar(_without(table, "queues"), ServiceCalendar(tz=zone), "hours", ctx)
    queues = {
        # A queue inherits every key it does not set from [hours]; a list it sets replaces the inherited one.
        name: _build_calendar(qtable, default, f"hours.queues.{name}", ctx)
        for name, qtable in _queue_tables(table.get("queues", {}), "hours.queues", ctx).items()
    }
    return CalendarSet(default, queues)


def _build_calendar(
    table: Mapping[str, object], base: ServiceCalendar, prefix: str, ctx: _Context
) -> ServiceCalendar:
    for key in table:
        if key not in _HOURS_KEYS:
            ctx.fail(f"{prefix}.{key}", f"unknown key{_did_you_mean(key, _HOURS_KEYS)}")
    seasons = {name: base.season(name) for name in ("winter", "summer")}
    for name, season in seasons.items():
        periods = season.periods
        start = season.start
        if name in table:
            periods = _periods(table[name], f"{prefix}.{name}", ctx)
        if f"{name}_start" in table:
            start = _month_day(table[f"{name}_start"], f"{prefix}.{name}_start", ctx)
        try:
            seasons[name] = Season(name, start, periods)
        except ValueError as exc:
            ctx.fail(f"{prefix}.{name}", str(exc), exc)
    _check(
        seasons["winter"].start != seasons["summer"].start,
        f"{prefix}.summer_start",
        f"must differ from winter_start (both {seasons['summer'].start})",
        ctx,
    )
    holidays = base.holidays
    if "holidays" in table:
        holidays = _dates(table["holidays"], f"{prefix}.holidays", ctx)
    extra = base.extra_working_days
    if "extra_working_days" in table:
        extra = _dates(table["extra_working_days"], f"{prefix}.extra_working_days", ctx)
    both = holidays & extra
    if both:
        ctx.fail(f"{prefix}.extra_working_days", f"{min(both)} is also listed in holidays")
    closed = base.closed_weekdays
    if "closed_weekdays" in table:
        closed = _weekdays(table["closed_weekdays"], f"{prefix}.closed_weekdays", ctx)
    return replace(
        base,
        seasons=(seasons["summer"], seasons["winter"]),
        holidays=holidays,
        extra_working_days=extra,
        closed_weekdays=closed,
    )


def _list(value: object, key: str, what: str, ctx: _Context) -> list[object]:
    if not isinstance(value, list):
        ctx.fail(key, f"must be a list of {what}, got {_show(value)}")
    return value


def _periods(value: object, key: str, ctx: _Context) -> tuple[Period, ...]:
    out: list[Period] = []
    for index, item in enumerate(_list(value, key, "'HH:MM-HH:MM' strings", ctx)):
        if not isinstance(item, str):
            ctx.fail(f"{key}[{index}]", f"must be a 'HH:MM-HH:MM' string, got {_show(item)}")
        try:
            out.append(Period.parse(item))
        except ValueError as exc:
            ctx.fail(f"{key}[{index}]", str(exc), exc)
    return tuple(out)


def _month_day(value: object, key: str, ctx: _Context) -> MonthDay:
    text = value.text if isinstance(value, _EnvValue) else value
    if not isinstance(text, str):
        ctx.fail(key, f"must be a 'MM-DD' string, got {_show(text)}")
    try:
        return MonthDay.parse(text)
    except ValueError as exc:
        ctx.fail(key, str(exc), exc)


def _dates(value: object, key: str, ctx: _Context) -> frozenset[date]:
    """Dates from TOML dates, ``"YYYY-MM-DD"`` strings or inclusive ``"YYYY-MM-DD..YYYY-MM-DD"`` ranges."""
    out: set[date] = set()
    for index, item in enumerate(_list(value, key, "dates", ctx)):
        where = f"{key}[{index}]"
        # TOML datetimes are dates too (subclass); a time of day makes no sense for a holiday.
        if isinstance(item, date) and not isinstance(item, datetime):
            out.add(item)
            continue
        if not isinstance(item, str):
            ctx.fail(where, f"must be a date 'YYYY-MM-DD' or a range 'FIRST..LAST', got {_show(item)}")
        first_text, _, last_text = item.partition("..")
        first = _date(first_text, where, ctx)
        last = _date(last_text, where, ctx) if last_text else first
        span = (last - first).days
        _check(0 <= span < _MAX_RANGE_DAYS, where, f"range must run forward, under a year, got {item!r}", ctx)
        out.update(first + timedelta(days=offset) for offset in range(span + 1))
    return frozenset(out)


def _date(text: str, key: str, ctx: _Context) -> date:
    text = text.strip()
    if not _DATE_RE.fullmatch(text):
        ctx.fail(key, f"must be a date 'YYYY-MM-DD', got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        ctx.fail(key, f"not a valid date {text!r}", exc)


def _weekdays(value: object, key: str, ctx: _Context) -> frozenset[int]:
    out: set[int] = set()
    for index, item in enumerate(_list(value, key, "weekday names", ctx)):
        name = item.strip().lower() if isinstance(item, str) else ""
        if name not in _WEEKDAYS:
            ctx.fail(f"{key}[{index}]", f"must be one of {', '.join(_WEEKDAYS)}, got {_show(item)}")
        out.add(_WEEKDAYS.index(name))
    return frozenset(out)


def _check_store(store: StoreSettings, env: Mapping[str, str], ctx: _Context) -> StoreSettings:
    _check_env_name(store.dsn_env, "store.dsn_env", ctx)
    if store.backend is not StoreBackend.POSTGRES:
        return store  # only Postgres needs a DSN; do not hold a secret nobody uses
    dsn = env.get(store.dsn_env) or None
    _check(
        dsn is not None,
        "store.dsn_env",
        f"the postgres backend needs a DSN in environment variable {store.dsn_env}, which is not set",
        ctx,
    )
    return replace(store, dsn=dsn)


def _split_host_port(text: str, lowest_port: int = 1) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ``ValueError``."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. '[::1]:8080'")
    if not sep or not host or not port_text.isdigit() or not lowest_port <= int(port_text) <= _MAX_PORT:
        raise ValueError(f"must be host:port with a port from {lowest_port} to 65535, got {text!r}")
    return host, int(port_text)


def _check_http(http: HttpSettings, ctx: _Context) -> HttpSettings:
    try:
        _split_host_port(http.listen, lowest_port=0)  # 0: any free port (tests, side-by-side demos)
    except ValueError as exc:
        ctx.fail("http.listen", str(exc), exc)
    return http


def _check_mqtt(mqtt: MqttSettings, env: Mapping[str, str], ctx: _Context) -> MqttSettings:
    parts = urlsplit(mqtt.url)
    # Credentials in the URL would put a password in the config file; checked first so that no later
    # message echoes them.
    _check(
        "@" not in parts.netloc,
        "mqtt.url",
        "must not contain credentials; use mqtt.username and mqtt.password_env",
        ctx,
    )
    try:
        port = parts.port  # raises ValueError when not a number or out of range
    except ValueError as exc:
        ctx.fail("mqtt.url", f"invalid port in {mqtt.url!r}: {exc}", exc)
    _check(
        parts.scheme in ("mqtt", "mqtts") and bool(parts.hostname) and parts.path in ("", "/") and port != 0,
        "mqtt.url",
        f"must look like 'mqtt://host:port' or 'mqtts://host:port', got {mqtt.url!r}",
        ctx,
    )
    for key, value in (("mqtt.prefix", mqtt.prefix), ("mqtt.site", mqtt.site)):
        # Wildcards and empty levels would make every subscriber's filter ambiguous.
        _check(
            bool(value) and not set(value) & {"+", "#", "\0"} and "//" not in value,
            key,
            f"must be a non-empty MQTT topic without wildcards, got {value!r}",
            ctx,
        )
    _check(
        not mqtt.prefix.startswith("/") and not mqtt.prefix.endswith("/"),
        "mqtt.prefix",
        f"must not start or end with '/', got {mqtt.prefix!r}",
        ctx,
    )
    _check("/" not in mqtt.site, "mqtt.site", f"must be one topic level (no '/'), got {mqtt.site!r}", ctx)
    _check_env_name(mqtt.password_env, "mqtt.password_env", ctx)
    _check(
        mqtt.ca_file is None or mqtt.use_tls,
        "mqtt.ca_file",
        "needs mqtt.tls = true (or an mqtts:// URL)",
        ctx,
    )
    return replace(mqtt, password=env.get(mqtt.password_env) or None)


def _resolve_api(api: ApiSettings, env: Mapping[str, str], ctx: _Context) -> ApiSettings:
    """Attach the API tokens: the environment variable wins over the file."""
    _check_env_name(api.tokens_env, "api.tokens_env", ctx)
    url = urlsplit(api.recordings_url)
    _check(
        not api.recordings_url or (url.scheme in ("http", "https") and bool(url.netloc)),
        "api.recordings_url",
        f"must be an http:// or https:// URL, got {api.recordings_url!r}",
        ctx,
    )
    _check(api.recordings_dir.startswith("/"), "api.recordings_dir", "must be an absolute path", ctx)
    text = env.get(api.tokens_env) or None
    key, origin = "api.tokens_env", f"environment variable {api.tokens_env}"
    if text is None and api.tokens_file is not None:
        text = _read_secret_file(api.tokens_file, "api.tokens_file", ctx)
        key, origin = "api.tokens_file", str(api.tokens_file)
    if text is None:
        return api
    return replace(api, tokens=_parse_tokens(text, key, origin, ctx))


def _parse_tokens(text: str, key: str, origin: str, ctx: _Context) -> tuple[ApiToken, ...]:
    """Parse ``role:token`` entries separated by commas, spaces or lines (``#`` starts a comment).

    Messages name the entry by its position only: the text holds secrets.
    """
    entries = [
        entry
        for line in text.splitlines()
        for entry in re.split(r"[\s,]+", line.split("#", 1)[0])
        if entry
    ]
    roles = [role.value for role in ApiRole]
    tokens: list[ApiToken] = []
    for number, entry in enumerate(entries, start=1):
        role, sep, token = entry.partition(":")
        where = f"entry {number} of {origin}"
        _check(bool(sep), key, f"{where} must be 'role:token'", ctx)
        # The role is not echoed either: without a colon in the right place it may be part of a token.
        _check(role in roles, key, f"{where} has an unknown role (expected {', '.join(roles)})", ctx)
        _check(
            len(token) >= MIN_TOKEN_LENGTH,
            key,
            f"{where}: token must be at least {MIN_TOKEN_LENGTH} characters",
            ctx,
        )
        _check(all(t.token != token for t in tokens), key, f"{where} repeats an earlier token", ctx)
        tokens.append(ApiToken(ApiRole(role), token))
    return tuple(tokens)
