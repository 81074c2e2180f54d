"""Wiring: settings → the daemon with its store and optional parts (MQTT, QA API)."""

from __future__ import annotations

from pbx_bridge.config import Settings, StoreBackend
from pbx_bridge.daemon import Daemon, Extras, Store
from pbx_bridge.errors import ConfigError

SQLITE_FILE = "pbx-bridge.sqlite3"


def make_store(settings: Settings) -> Store:
    """The call store the settings ask for."""
    cfg = settings.store
    if cfg.backend is StoreBackend.SQLITE:
        from pbx_bridge.store.sqlite import SqliteStore

        cfg.path.mkdir(parents=True, exist_ok=True)
        return SqliteStore(
            cfg.path / SQLITE_FILE, batch_interval_s=cfg.batch_interval_s, retention_days=cfg.retention_days
        )
    if cfg.backend is StoreBackend.POSTGRES:
        try:
            from pbx_bridge.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            raise ConfigError("store.backend: postgres needs asyncpg: pip install 'pbx-bridge[postgres]'") from exc
        if cfg.dsn is None:  # load_settings refuses this already; a Settings built by hand may not
            raise ConfigError(f"store.dsn_env: the postgres backend needs a DSN in {cfg.dsn_env}")
        # The site names this PBX in the shared database, as it does on the MQTT broker.
        return PostgresStore(
            cfg.dsn,
            batch_interval_s=cfg.batch_interval_s,
            retention_days=cfg.retention_days,
            site=settings.mqtt.site,
        )
    raise ConfigError(f"store.backend: {cfg.backend.value} is not available in this build")


def make_extras(settings: Settings) -> Extras:
    """Optional parts: the MQTT publisher when enabled, the QA API routes when present."""
    from pbx_bridge.web.api import register_api

    if not settings.mqtt.enabled:
        return Extras(routes=register_api)
    from pbx_bridge.mqtt import MqttService

    mqtt = MqttService(settings.mqtt, policies=settings.policies)  # a bad URL fails now, not after start-up
    return Extras(mqtt=mqtt.run, mqtt_connected=mqtt.connected, routes=register_api)


def build_daemon(settings: Settings) -> Daemon:
    return Daemon(settings, make_store(settings), extras=make_extras(settings))


async def run_daemon(settings: Settings) -> int:
    return await build_daemon(settings).run()
