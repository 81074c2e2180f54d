"""The test harness itself: without PostgreSQL a developer gets a skip with the install hint, CI a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import pg_cluster
from .pg_cluster import Cluster, ClusterUnavailable

pytestmark = pytest.mark.needs_postgres


def test_missing_binaries_skip_locally_but_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """No /usr/lib/postgresql/*/bin and no pg_ctl on PATH: ClusterUnavailable, then skip or (CI=true) fail."""
    monkeypatch.setattr(pg_cluster.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg_cluster.shutil, "which", lambda name: None)
    with pytest.raises(ClusterUnavailable, match="apt-get install postgresql") as info:
        pg_cluster.find_bin_dir()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pg_cluster.unavailable(str(info.value))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and PostgreSQL server binaries"):
        pg_cluster.unavailable(str(info.value))


def test_the_cluster_listens_on_loopback_only(pg_cluster: Cluster) -> None:
    """The server was started on 127.0.0.1 with its socket in its own temp dir, as the right user."""
    assert pg_cluster.dsn().startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/")
    options = (pg_cluster.data / "postmaster.opts").read_text()
    assert '"listen_addresses=127.0.0.1"' in options
    assert f'"-k" "{pg_cluster.root}"' in options
    assert Path(pg_cluster.root).is_relative_to("/tmp") or not pg_cluster.prefix
