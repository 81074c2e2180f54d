"""Settings loading: defaults, the example file, validation, environment overrides and secrets."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbx_bridge.config import (
    AmiSettings,
    ApiRole,
    ApiSettings,
    MqttSettings,
    PbxSettings,
    Settings,
    StoreBackend,
    StoreSettings,
    WallboardLang,
    load_settings,
)
from pbx_bridge.engine.hours import MonthDay, Period, ServiceCalendar
from pbx_bridge.engine.policy import AnswerClock, Policy
from pbx_bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pbx-bridge.toml"
SECRET = "s3cr3t-Value-Never-Shown"
TOKEN_A = "wallboard-token-0123456789"
TOKEN_B = "admin-token-abcdefghijklmn"


def write(tmp_path: Path, text: str) -> Path:
    """Write a config file and return its path."""
    path = tmp_path / "pbx-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    """Load settings from TOML text with an explicit (by default empty) environment."""
    return load_settings(write(tmp_path, text), env or {})


# --- defaults and the example file ---------------------------------------------------------------


def test_defaults_equal_the_service_standard() -> None:
    """With no file and no environment, every threshold and the calendar equal SERVICE_STANDARD.md."""
    settings = load_settings(None, {})
    assert settings == Settings()
    policy = settings.policies.default
    assert policy == Policy()
    assert (policy.ring_seconds, policy.rings_limit, policy.rings_apology) == (3.0, 3, 5)
    assert (policy.hold_limit_s, policy.talk_target_s, policy.talk_max_s) == (60.0, 180.0, 300.0)
    assert policy.transfer_must_confirm and policy.hangup_customer_first
    assert policy.answer_clock is AnswerClock.OFFERED
    assert (policy.callback_deadline_h, policy.unattended_grace_s) == (72.0, 60.0)
    assert policy.complaints_per_month == 2
    cal = settings.calendars.default
    assert cal.tz is ZoneInfo("Asia/Shanghai")
    assert cal.season("winter").start == MonthDay(10, 1)
    assert cal.season("winter").periods == (Period.parse("08:30-12:00"), Period.parse("14:30-20:00"))
    assert cal.season("summer").start == MonthDay(5, 1)
    assert cal.season("summer").periods == (Period.parse("08:30-12:00"), Period.parse("15:00-21:00"))
    assert settings.policies.queues == {} and settings.calendars.queues == {}
    assert settings.ami.port == 5038 and settings.ami.queue_size == 10000
    assert settings.ami.secret_env == "PBX_BRIDGE_AMI_SECRET" and settings.ami.secret is None
    assert settings.pbx.internal_endpoints == r"^\d{2,6}$"
    assert settings.store.backend is StoreBackend.SQLITE and settings.store.path == Path("./data")
    assert settings.store.retention_days == 365
    assert settings.http.listen == "127.0.0.1:8080"
    mqtt = settings.mqtt
    assert (mqtt.enabled, mqtt.prefix, mqtt.site) == (False, "pbx-bridge", "default")
    assert settings.mqtt.mask_numbers and settings.wallboard.mask_numbers
    assert settings.wallboard.lang is WallboardLang.ZH_CN
    assert settings.api.tokens == ()


def test_example_file_loads_and_equals_defaults() -> None:
    """config/pbx-bridge.toml loads without error and yields exactly the built-in defaults."""
    settings = load_settings(EXAMPLE, {})
    assert settings == Settings()
    assert settings.source == EXAMPLE


def test_example_file_documents_every_key_and_holds_no_secret() -> None:
    """Every settable key appears in the example (commented out when unset by default), and no secret does."""
    text = EXAMPLE.read_text(encoding="utf-8")
    sections: dict[str, type] = {
        "ami": AmiSettings,
        "pbx": PbxSettings,
        "policy": Policy,
        "store": StoreSettings,
        "mqtt": MqttSettings,
        "api": ApiSettings,
    }
    for section, cls in sections.items():
        for spec in fields(cls):
            pattern = rf"^(# )?{spec.name} ="
            if spec.metadata.get("secret"):
                assert not re.search(pattern, text, re.MULTILINE), f"{section}.{spec.name}"
            else:
                assert re.search(pattern, text, re.MULTILINE), f"{section}.{spec.name} is not documented"
    for key in ("winter", "summer", "winter_start", "summer_start", "holidays", "extra_working_days"):
        assert re.search(rf"^{key} =", text, re.MULTILINE), key
    assert "[policy.queues." in text and "[hours.queues." in text


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[policy]\nhold_limit_s = -5", "policy.hold_limit_s: must be a positive number, got -5"),
        ("[policy]\nring_seconds = 0", "policy.ring_seconds: must be a positive number, got 0"),
        ("[policy]\nrings_limit = 2.5", "policy.rings_limit: must be a positive integer, got 2.5"),
        ("[policy]\nrings_limit = 5", "policy.rings_limit: must be less than rings_apology"),
        ("[policy]\nhold_warn_s = 60", "policy.hold_warn_s: must be less than hold_limit_s"),
        ("[policy]\ntalk_target_s = 301", "policy.talk_target_s: must not exceed talk_max_s"),
        ("[policy]\nanswer_clock = 'ringing'", "policy.answer_clock: must be one of 'offered', 'arrival'"),
        ("[policy]\ntransfer_must_confirm = 'yes'", "policy.transfer_must_confirm: must be true or false"),
        ("[policy]\nhold_limit = 60", "policy.hold_limit: unknown key (did you mean 'hold_limit_s'?)"),
        ("[policy.queues.vip]\nrings_limit = 7", "policy.queues.vip.rings_limit: must be less than"),
        ("[policy.queues.vip]\nbogus = 1", "policy.queues.vip.bogus: unknown key"),
        ("[policy]\nqueues = 3", "policy.queues: must be a table"),
        ("policy = 3", "policy: must be a table"),
        ("[amy]\nhost = 'x'", "[amy]: unknown section (did you mean 'ami'?)"),
        ("[ami]\nhostname = 'x'", "ami.hostname: unknown key (did you mean 'host'?)"),
        ("[ami]\nhost = ''", "ami.host: must not be empty"),
        ("[ami]\nport = 70000", "ami.port: must be a TCP port"),
        ("[ami]\nport = 0", "ami.port: must be a positive integer, got 0"),
        ("[ami]\nport = '5038'", "ami.port: must be a positive integer, got '5038'"),
        ("[ami]\nqueue_size = -1", "ami.queue_size: must be a positive integer, got -1"),
        ("[ami]\nreconnect_min_s = 90.0", "ami.reconnect_max_s: must be at least ami.reconnect_min_s"),
        ("[ami]\nping_timeout_s = 20.0", "ami.ping_timeout_s: must be less than ami.ping_interval_s"),
        ("[ami]\nsecret_env = 'not a name'", "ami.secret_env: must be an environment variable name"),
        ("[pbx]\ninternal_endpoints = '(['", "pbx.internal_endpoints: invalid regular expression"),
        ("[pbx]\ntimezone = 'Mars/Olympus'", "pbx.timezone: unknown IANA time zone 'Mars/Olympus'"),
        ("[hours]\nwinter = ['08:30-12:00', '25:00-26:00']", "hours.winter[1]: not a valid time of day"),
        ("[hours]\nsummer = ['12:00-08:30']", "hours.summer[0]: must start before it ends"),
        ("[hours]\nsummer = ['8h30-12h']", "hours.summer[0]: must look like 'HH:MM-HH:MM'"),
        ("[hours]\nsummer = '08:30-12:00'", "hours.summer: must be a list"),
        ("[hours]\nsummer = ['08:00-12:00', '11:00-13:00']", "hours.summer: periods 08:00-12:00 and 11:00"),
        ("[hours]\nsummer_start = '13-01'", "hours.summer_start: not a valid month and day: 13-01"),
        ("[hours]\nsummer_start = '10-01'", "hours.summer_start: must differ from winter_start"),
        ("[hours]\nholidays = ['2025-02-30']", "hours.holidays[0]: not a valid date '2025-02-30'"),
        ("[hours]\nholidays = ['1 May']", "hours.holidays[0]: must be a date 'YYYY-MM-DD'"),
        ("[hours]\nholidays = ['2025-10-08..2025-10-01']", "hours.holidays[0]: range must run forward"),
        ("[hours]\nholidays = [2025-10-01T09:00:00]", "hours.holidays[0]: must be a date"),
        (
            "[hours]\nholidays = ['2025-10-01']\nextra_working_days = ['2025-10-01']",
            "hours.extra_working_days: 2025-10-01 is also listed in holidays",
        ),
        ("[hours]\nclosed_weekdays = ['someday']", "hours.closed_weekdays[0]: must be one of mon, tue"),
        ("[hours]\nopen = []", "hours.open: unknown key"),
        ("[hours.queues.vip]\nwinter = ['x']", "hours.queues.vip.winter[0]: must look like 'HH:MM-HH:MM'"),
        ("[store]\nbackend = 'mysql'", "store.backend: must be one of 'sqlite', 'postgres', got 'mysql'"),
        ("[store]\nretention_days = 0", "store.retention_days: must be a positive integer, got 0"),
        ("[store]\npath = ''", "store.path: must be a non-empty path"),
        ("[http]\nlisten = '8080'", "http.listen: must be host:port"),
        ("[http]\nlisten = 'localhost:99999'", "http.listen: must be host:port with a port from 0 to 65535"),
        ("[http]\nlisten = '::1:8080'", "http.listen: an IPv6 address must be in brackets"),
        ("[mqtt]\nurl = 'http://broker:1883'", "mqtt.url: must look like 'mqtt://host:port'"),
        ("[mqtt]\nurl = 'mqtt://broker:99999'", "mqtt.url: invalid port"),
        ("[mqtt]\nprefix = 'a/+/b'", "mqtt.prefix: must be a non-empty MQTT topic without wildcards"),
        ("[mqtt]\nprefix = '/pbx'", "mqtt.prefix: must not start or end with '/'"),
        ("[mqtt]\nsite = 'a/b'", "mqtt.site: must be one topic level"),
        ("[mqtt]\nca_file = '/etc/ca.pem'", "mqtt.ca_file: needs mqtt.tls = true"),
        ("[wallboard]\nlang = 'fr'", "wallboard.lang: must be one of 'zh-CN', 'en', got 'fr'"),
        ("[api]\ntokens_env = ''", "api.tokens_env: must be an environment variable name"),
    ],
)
def test_every_validation_error_names_its_key_and_file(tmp_path: Path, toml: str, expected: str) -> None:
    """Each invalid value raises ConfigError whose message names the key, the reason and the file."""
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    message = str(info.value)
    assert expected in message
    assert str(path) in message


def test_valid_listen_addresses(tmp_path: Path) -> None:
    """http.listen accepts host:port and bracketed IPv6, exposing host and port."""
    http = load(tmp_path, "[http]\nlisten = '[::1]:9090'").http
    assert (http.host, http.port) == ("::1", 9090)
    http = load(tmp_path, "[http]\nlisten = '0.0.0.0:80'").http
    assert (http.host, http.port) == ("0.0.0.0", 80)


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    """A syntax error or a missing file is a ConfigError naming the file."""
    path = write(tmp_path, "[ami\nhost = 1")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_settings(path, {})
    assert str(path) in str(info.value)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_settings(missing, {})
    assert str(missing) in str(info.value)


def test_a_file_with_some_keys_keeps_the_other_defaults(tmp_path: Path) -> None:
    """Keys in the file replace defaults, integers are accepted for float keys, and the rest stay default."""
    settings = load(
        tmp_path,
        """
        [ami]
        host = "10.0.0.5"
        [policy]
        hold_limit_s = 90
        answer_clock = "arrival"
        [pbx]
        timezone = "Europe/Berlin"
        [store]
        path = "/var/lib/pbx-bridge"
        """,
    )
    assert settings.ami.host == "10.0.0.5" and settings.ami.port == 5038
    assert settings.policies.default.hold_limit_s == 90.0
    assert isinstance(settings.policies.default.hold_limit_s, float)
    assert settings.policies.default.answer_clock is AnswerClock.ARRIVAL
    assert settings.policies.default.rings_limit == 3
    assert settings.calendars.default.tz is ZoneInfo("Europe/Berlin")
    assert settings.pbx.zone is ZoneInfo("Europe/Berlin")
    assert settings.store.path == Path("/var/lib/pbx-bridge")


# --- environment overrides ------------------------------------------------------------------------


def test_environment_overrides_scalar_keys_with_their_types(tmp_path: Path) -> None:
    """PBX_BRIDGE_<SECTION>_<KEY> variables override file and defaults, parsed to each field's type."""
    env = {
        "PBX_BRIDGE_AMI_HOST": "pbx.example",
        "PBX_BRIDGE_AMI_PORT": "6038",
        "PBX_BRIDGE_HTTP_LISTEN": "0.0.0.0:9000",
        "PBX_BRIDGE_POLICY_HOLD_LIMIT_S": "90",
        "PBX_BRIDGE_POLICY_ANSWER_CLOCK": "arrival",
        "PBX_BRIDGE_POLICY_TRANSFER_MUST_CONFIRM": "off",
        "PBX_BRIDGE_MQTT_ENABLED": "yes",
        "PBX_BRIDGE_MQTT_USERNAME": "bridge",
        "PBX_BRIDGE_HOURS_SUMMER_START": "06-01",
        "PBX_BRIDGE_PBX_TIMEZONE": "Europe/Berlin",
        "PBX_BRIDGE_STORE_PATH": "/srv/data",
        "PBX_BRIDGE_WALLBOARD_LANG": "en",
    }
    settings = load(tmp_path, "[ami]\nhost = 'from-file'\nport = 5039", env)
    assert settings.ami.host == "pbx.example"
    assert settings.ami.port == 6038
    assert settings.http.port == 9000
    assert settings.policies.default.hold_limit_s == 90.0
    assert settings.policies.default.answer_clock is AnswerClock.ARRIVAL
    assert settings.policies.default.transfer_must_confirm is False
    assert settings.mqtt.enabled is True and settings.mqtt.username == "bridge"
    assert settings.calendars.default.season("summer").start == MonthDay(6, 1)
    assert settings.calendars.default.tz is ZoneInfo("Europe/Berlin")
    assert settings.store.path == Path("/srv/data")
    assert settings.wallboard.lang is WallboardLang.EN


def test_invalid_environment_value_names_the_key_and_variable(tmp_path: Path) -> None:
    """A bad environment value is a ConfigError naming both the key and the environment variable."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "", {"PBX_BRIDGE_POLICY_HOLD_LIMIT_S": "-5"})
    assert "policy.hold_limit_s: must be a positive number, got -5" in str(info.value)
    assert "PBX_BRIDGE_POLICY_HOLD_LIMIT_S" in str(info.value)
    with pytest.raises(ConfigError, match=r"ami\.port: must be a positive integer, got 'abc'.*_AMI_PORT"):
        load(tmp_path, "", {"PBX_BRIDGE_AMI_PORT": "abc"})
    with pytest.raises(ConfigError, match=r"mqtt\.tls: must be true or false"):
        load(tmp_path, "", {"PBX_BRIDGE_MQTT_TLS": "maybe"})


def test_environment_cross_check_uses_the_merged_values(tmp_path: Path) -> None:
    """An environment value that breaks a cross-field rule against the file's value is rejected."""
    path = write(tmp_path, "[policy]\nhold_warn_s = 50")
    with pytest.raises(ConfigError, match=r"policy\.hold_warn_s: must be less than hold_limit_s") as info:
        load_settings(path, {"PBX_BRIDGE_POLICY_HOLD_LIMIT_S": "40"})
    # Both origins are named: the variable that set hold_limit_s and the file that set hold_warn_s.
    assert "PBX_BRIDGE_POLICY_HOLD_LIMIT_S" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_environment_variables_are_rejected(tmp_path: Path) -> None:
    """A PBX_BRIDGE_<SECTION>_ variable that sets no scalar key is an error; other names are ignored."""
    with pytest.raises(ConfigError, match=r"ami\.hostname: environment variable PBX_BRIDGE_AMI_HOSTNAME"):
        load(tmp_path, "", {"PBX_BRIDGE_AMI_HOSTNAME": "x"})
    with pytest.raises(ConfigError, match="PBX_BRIDGE_HOURS_HOLIDAYS"):
        load(tmp_path, "", {"PBX_BRIDGE_HOURS_HOLIDAYS": "2025-01-01"})
    assert load(tmp_path, "", {"PBX_BRIDGE_LOG_LEVEL": "debug", "PATH": "/bin"}) == Settings()


def test_empty_environment_value_unsets_an_optional_key(tmp_path: Path) -> None:
    """An empty variable for an optional key (here mqtt.username) unsets the file's value."""
    settings = load(tmp_path, "[mqtt]\nusername = 'bridge'", {"PBX_BRIDGE_MQTT_USERNAME": ""})
    assert settings.mqtt.username is None


# --- secrets ---------------------------------------------------------------------------------------


def test_ami_secret_from_environment(tmp_path: Path) -> None:
    """The AMI secret comes from the variable named by ami.secret_env."""
    assert load(tmp_path, "", {"PBX_BRIDGE_AMI_SECRET": SECRET}).ami.secret == SECRET
    custom = load(tmp_path, "[ami]\nsecret_env = 'MY_AMI_PW'", {"MY_AMI_PW": SECRET})
    assert custom.ami.secret == SECRET


def test_ami_secret_from_file(tmp_path: Path) -> None:
    """The AMI secret comes from ami.secret_file without its newline; the variable takes precedence."""
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    toml = f"[ami]\nsecret_file = '{secret_file}'"
    assert load(tmp_path, toml).ami.secret == SECRET
    assert load(tmp_path, toml, {"PBX_BRIDGE_AMI_SECRET": "from-env"}).ami.secret == "from-env"
    from_env_path = load_settings(None, {"PBX_BRIDGE_AMI_SECRET_FILE": str(secret_file)})
    assert from_env_path.ami.secret == SECRET


def test_ami_secret_file_problems_name_the_key(tmp_path: Path) -> None:
    """A missing or empty secret file is a ConfigError naming ami.secret_file."""
    with pytest.raises(ConfigError, match=r"ami\.secret_file: cannot read"):
        load(tmp_path, f"[ami]\nsecret_file = '{tmp_path / 'missing'}'")
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ami\.secret_file: .* is empty"):
        load(tmp_path, f"[ami]\nsecret_file = '{empty}'")


def test_missing_ami_secret_is_none() -> None:
    """Without a variable or a file the secret is None (replays need none); that is not an error."""
    assert load_settings(None, {}).ami.secret is None


@pytest.mark.parametrize(
    ("section", "key"), [("ami", "secret"), ("mqtt", "password"), ("store", "dsn"), ("api", "tokens")]
)
def test_secrets_in_the_toml_file_are_rejected(tmp_path: Path, section: str, key: str) -> None:
    """A secret key in the TOML file is rejected with a pointer to the environment, without echoing it."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[{section}]\n{key} = '{SECRET}'")
    message = str(info.value)
    assert f"{section}.{key}: secrets are never read from the config file" in message
    assert "environment variable" in message
    assert SECRET not in message


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    """repr(), str() and redacted() of the settings show no secret, only whether each is set."""
    env = {
        "PBX_BRIDGE_AMI_SECRET": SECRET,
        "PBX_BRIDGE_MQTT_PASSWORD": SECRET + "-mqtt",
        "PBX_BRIDGE_STORE_DSN": f"postgresql://u:{SECRET}@db/pbx",
        "PBX_BRIDGE_API_TOKENS": f"wallboard:{TOKEN_A}",
    }
    settings = load(tmp_path, "[store]\nbackend = 'postgres'\n[mqtt]\nenabled = true", env)
    assert settings.ami.secret == SECRET
    assert settings.mqtt.password == SECRET + "-mqtt"
    assert settings.store.dsn == env["PBX_BRIDGE_STORE_DSN"]
    shown = (repr(settings), str(settings), repr(settings.ami), repr(settings.api), str(settings.redacted()))
    for text in shown:
        assert SECRET not in text
        assert TOKEN_A not in text
    redacted = settings.redacted()
    assert redacted["ami"]["secret"] == "<set>"
    assert redacted["api"]["tokens"] == "<set>"
    assert redacted["ami"]["host"] == "127.0.0.1"


def test_postgres_needs_a_dsn_from_the_environment(tmp_path: Path) -> None:
    """The postgres backend without its DSN variable is an error naming store.dsn_env."""
    with pytest.raises(ConfigError, match=r"store\.dsn_env: .*PBX_BRIDGE_STORE_DSN"):
        load(tmp_path, "[store]\nbackend = 'postgres'")
    assert load(tmp_path, "", {"PBX_BRIDGE_STORE_DSN": "postgresql://db"}).store.dsn is None


def test_mqtt_url_with_credentials_is_rejected_without_echoing_them(tmp_path: Path) -> None:
    """Credentials in mqtt.url are rejected and the message does not repeat the password."""
    with pytest.raises(ConfigError, match=r"mqtt\.url: must not contain credentials") as info:
        load(tmp_path, f"[mqtt]\nurl = 'ftp://user:{SECRET}@broker'")
    assert SECRET not in str(info.value)


def test_api_tokens_from_environment_and_file(tmp_path: Path) -> None:
    """API tokens parse as role:token pairs from the variable or the file, and role_for finds the role."""
    settings = load(tmp_path, "", {"PBX_BRIDGE_API_TOKENS": f"wallboard:{TOKEN_A}, admin:{TOKEN_B}"})
    assert settings.api.role_for(TOKEN_A) is ApiRole.WALLBOARD
    assert settings.api.role_for(TOKEN_B) is ApiRole.ADMIN
    assert settings.api.role_for("wrong-token-0123456789") is None
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# QA staff\nqa:{TOKEN_A}\n\nadmin:{TOKEN_B}  # ops\n", encoding="utf-8")
    from_file = load(tmp_path, f"[api]\ntokens_file = '{tokens_file}'")
    assert [t.role for t in from_file.api.tokens] == [ApiRole.QA, ApiRole.ADMIN]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"boss:{TOKEN_A}", "entry 1 of environment variable PBX_BRIDGE_API_TOKENS has an unknown role"),
        (TOKEN_A, "must be 'role:token'"),
        ("qa:short", "token must be at least 16 characters"),
        (f"qa:{TOKEN_A},admin:{TOKEN_A}", "entry 2 of environment variable PBX_BRIDGE_API_TOKENS repeats"),
    ],
)
def test_bad_api_tokens_are_rejected_without_echoing_them(tmp_path: Path, value: str, expected: str) -> None:
    """Malformed token entries name api.tokens_env and the entry number but never the token."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "", {"PBX_BRIDGE_API_TOKENS": value})
    message = str(info.value)
    assert message.startswith("api.tokens_env: ")
    assert expected in message
    assert TOKEN_A not in message


def test_recording_links(tmp_path: Path) -> None:
    """Recordings under recordings_dir link to recordings_url (path quoted); others, or no URL, stay file names."""
    plain = load(tmp_path, "")
    assert plain.api.recording_link("/var/spool/asterisk/monitor/a.wav") == "/var/spool/asterisk/monitor/a.wav"
    settings = load(tmp_path, "[api]\nrecordings_url = 'https://qa.example/rec'\nrecordings_dir = '/rec/'")
    assert settings.api.recording_link("/rec/2026/12/04/q-5550101 张.wav") == (
        "https://qa.example/rec/2026/12/04/q-5550101%20%E5%BC%A0.wav"
    )
    assert settings.api.recording_link("/elsewhere/a.wav") == "/elsewhere/a.wav"
    assert settings.api.recording_link("/recordings/a.wav") == "/recordings/a.wav"  # not under /rec/
    assert settings.api.recording_link(None) is None


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("recordings_url = 'ftp://qa.example/rec'", r"api\.recordings_url: must be an http:// or https:// URL"),
        ("recordings_url = '/rec'", r"api\.recordings_url: must be an http:// or https:// URL"),
        ("recordings_dir = 'monitor'", r"api\.recordings_dir: must be an absolute path"),
    ],
)
def test_bad_recording_settings_are_rejected(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, f"[api]\n{toml}")


# --- per-queue overrides ----------------------------------------------------------------------------


def test_per_queue_policy_overrides_inherit_the_rest(tmp_path: Path) -> None:
    """A [policy.queues.<name>] table changes only its keys; the rest, env overrides too, is inherited."""
    settings = load(
        tmp_path,
        """
        [policy]
        hold_limit_s = 90
        [policy.queues.vip]
        rings_limit = 2
        rings_apology = 4
        [policy.queues."after-sales"]
        answer_clock = "arrival"
        """,
        {"PBX_BRIDGE_POLICY_TALK_MAX_S": "600"},
    )
    vip = settings.policies.for_queue("vip")
    assert (vip.rings_limit, vip.rings_apology, vip.hold_limit_s, vip.talk_max_s) == (2, 4, 90.0, 600.0)
    assert settings.policies.for_queue("after-sales").answer_clock is AnswerClock.ARRIVAL
    assert settings.policies.for_queue("sales") == settings.policies.default
    assert settings.policies.default.rings_limit == 3


def test_per_queue_calendars_inherit_the_rest(tmp_path: Path) -> None:
    """An [hours.queues.<name>] table changes only its keys and shares the deployment's time zone."""
    settings = load(
        tmp_path,
        """
        [pbx]
        timezone = "Europe/Berlin"
        [hours]
        holidays = ["2025-01-01", 2025-05-01, "2025-10-01..2025-10-03"]
        closed_weekdays = ["sun"]
        [hours.queues.vip]
        winter = ["08:00-20:00"]
        extra_working_days = ["2025-01-05"]
        """,
    )
    default = settings.calendars.default
    vip = settings.calendars.for_queue("vip")
    assert default.holidays == frozenset(
        {date(2025, 1, 1), date(2025, 5, 1), date(2025, 10, 1), date(2025, 10, 2), date(2025, 10, 3)}
    )
    assert vip.holidays == default.holidays
    assert vip.closed_weekdays == default.closed_weekdays == frozenset({6})
    assert vip.tz is ZoneInfo("Europe/Berlin")
    assert vip.season("winter").periods == (Period.parse("08:00-20:00"),)
    assert vip.season("summer") == default.season("summer")
    assert vip.is_service_day(date(2025, 1, 5))  # a Sunday made a working day for this queue only
    assert not default.is_service_day(date(2025, 1, 5))
    assert settings.calendars.for_queue("sales") is default


def test_calendar_from_settings_matches_the_standard_calendar() -> None:
    """The default settings' calendar equals a ServiceCalendar built directly with the defaults."""
    assert load_settings(None, {}).calendars.default == ServiceCalendar()
