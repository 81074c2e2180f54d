"""Pytest plugins shared by several test folders, loaded here so each is registered once per session.

- ``store_contract.fixtures``: the captured calls the call-store tests replay (``busy_hour``, ``utf8_calls``, ``now``).
- ``store_pg.pg_fixtures``: the PostgreSQL cluster and databases (``pg_cluster``, ``pg_dsn``, ``fresh_dsn``...),
  one server for tests/store_pg and the ``postgres`` cases of tests/store_contract.

A folder's own conftest.py may define a fixture of the same name: the nearer definition wins.
"""

from __future__ import annotations

pytest_plugins = ["store_contract.fixtures", "store_pg.pg_fixtures"]
