"""docker-compose.yml and the Dockerfile fit the repository: paths exist, and the services agree.

Docker is not available to the tests, so these check what can be checked without it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from ops_contract import load_yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = load_yaml(REPO / "docker-compose.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, is_bind) for every volume of a service, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            out.append((source, target, source.startswith((".", "/", "~"))))
        else:
            out.append((volume["source"], volume["target"], volume.get("type") == "bind"))
    return out


def _bind_targets(name: str) -> dict[str, str]:
    """Container path -> repository path of a service's bind mounts."""
    return {target: source for source, target, bind in _mounts(SERVICES[name]) if bind}


def _host_path_exists(source: str) -> bool:
    path = (REPO / source).resolve()
    if path.exists():
        return True
    # config/pbx-bridge.toml is written by the deployment; the folder is enough.
    config = (REPO / "config").resolve()
    return (path == config or config in path.parents) and config.is_dir()


def test_stack_has_every_service() -> None:
    """The stack runs Asterisk, pbx-bridge, MQTT, Prometheus, Alertmanager and Grafana."""
    assert set(SERVICES) >= {"asterisk", "pbx-bridge", "mosquitto", "prometheus", "alertmanager", "grafana"}
    assert SERVICES["mosquitto"]["image"].startswith("eclipse-mosquitto:2")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounts_exist_and_volumes_are_declared(name: str) -> None:
    """Every bind-mounted host path exists in the repository; every named volume is declared."""
    declared = set(COMPOSE.get("volumes") or {})
    for source, target, bind in _mounts(SERVICES[name]):
        if bind:
            assert not Path(source).is_absolute(), f"{name}: {source} is outside the repository"
            assert _host_path_exists(source), f"{name}: {source} does not exist"
        else:
            assert source in declared, f"{name}: volume {source} is not declared"
        assert target.startswith("/"), target


def test_published_ports_are_bound_to_loopback() -> None:
    """No service is published on every interface by default."""
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_pbx_bridge_is_built_here_with_the_secret_from_the_environment() -> None:
    """pbx-bridge is built from the repository's Dockerfile and gets the AMI secret by interpolation."""
    service = SERVICES["pbx-bridge"]
    context = REPO / service["build"]["context"]
    assert context.is_dir()
    assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
    assert re.fullmatch(r"\$\{PBX_BRIDGE_AMI_SECRET:\?[^}]*\}", service["environment"]["PBX_BRIDGE_AMI_SECRET"])
    assert _bind_targets("pbx-bridge")["/etc/pbx-bridge"] == "./config"


def test_no_secret_is_committed_in_compose() -> None:
    """Secrets in the compose file are all ${...} interpolations, never literals."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    for match in re.finditer(r"(?im)^[ \t]*[\w-]*(secret|password)[\w-]*[ \t]*[:=][ \t]*(\S.*)$", text):
        assert match.group(2).startswith("${"), match.group(0)


def test_asterisk_gets_the_ami_secret_where_manager_conf_includes_it() -> None:
    """The compose-rendered secret lands on the path manager.conf #includes, inside /etc/asterisk."""
    manager = (REPO / "asterisk_sample" / "manager.conf").read_text(encoding="utf-8")
    included = re.findall(r'^#include\s+"?([^"\s]+)"?', manager, re.MULTILINE)
    assert len(included) == 1
    configs = {c["source"]: c["target"] for c in SERVICES["asterisk"]["configs"]}
    assert f"/etc/asterisk/{included[0]}" in configs.values()
    for source in configs:
        content = COMPOSE["configs"][source]["content"]
        assert re.search(r"^secret\s*=\s*\$\{PBX_BRIDGE_AMI_SECRET:\?", content, re.MULTILINE)
    mounted = _bind_targets("asterisk")
    assert mounted["/etc/asterisk/manager.conf"] == "./asterisk_sample/manager.conf"


def test_compose_subnet_is_the_one_manager_conf_permits() -> None:
    """manager.conf lets the compose network log in to AMI, and only it (and loopback)."""
    subnet = COMPOSE["networks"]["pbx"]["ipam"]["config"][0]["subnet"]
    network, bits = subnet.split("/")
    mask = ".".join(str((0xFFFFFFFF << (32 - int(bits)) >> (24 - 8 * i)) & 0xFF) for i in range(4))
    manager = (REPO / "asterisk_sample" / "manager.conf").read_text(encoding="utf-8")
    assert f"permit = {network}/{mask}" in manager


def test_prometheus_gets_its_config_and_rules_side_by_side() -> None:
    """Prometheus mounts prometheus.yml and every rule file it names, in the same folder."""
    mounted = _bind_targets("prometheus")
    assert mounted["/etc/prometheus/prometheus.yml"] == "./metrics/prometheus.yml"
    config = load_yaml(REPO / "metrics" / "prometheus.yml")
    for rule_file in config["rule_files"]:
        assert mounted[f"/etc/prometheus/{rule_file}"] == f"./metrics/{rule_file}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]


def test_prometheus_targets_are_compose_services() -> None:
    """Prometheus scrapes pbx-bridge on port 8080 and alerts through the alertmanager service."""
    config = load_yaml(REPO / "metrics" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pbx-bridge"]["static_configs"][0]["targets"] == ["pbx-bridge:8080"]
    assert "EXPOSE 8080" in DOCKERFILE
    for manager in config["alerting"]["alertmanagers"]:
        for target in manager["static_configs"][0]["targets"]:
            assert target.split(":")[0] in SERVICES
    assert _bind_targets("alertmanager")["/etc/alertmanager/alertmanager.yml"] == "./metrics/alertmanager.yml"


def test_grafana_provisioning_finds_the_dashboard() -> None:
    """Grafana's dashboard provider reads the folder the dashboard JSON is mounted into."""
    mounted = _bind_targets("grafana")
    providers = load_yaml(REPO / "metrics" / "grafana" / "provisioning" / "dashboards" / "pbx-bridge.yml")
    folder = providers["providers"][0]["options"]["path"].rstrip("/")
    dashboards = [t for t, s in mounted.items() if s == "./metrics/grafana/pbx-bridge.json"]
    assert [str(Path(t).parent) for t in dashboards] == [folder]
    for kind in ("datasources", "dashboards"):
        assert mounted[f"/etc/grafana/provisioning/{kind}"] == f"./metrics/grafana/provisioning/{kind}"
    sources = load_yaml(REPO / "metrics" / "grafana" / "provisioning" / "datasources" / "pbx-bridge.yml")
    for source in sources["datasources"]:
        assert re.match(r"http://([\w-]+):", source["url"]).group(1) in SERVICES


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    steps = []
    for raw in re.sub(r"\\\n", " ", DOCKERFILE).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, arg = line.partition(" ")
            steps.append((op, arg.strip()))
    return steps


def test_dockerfile_builds_the_package_and_runs_the_daemon() -> None:
    """python:3.11-slim, pip install ., and pbx-bridge run --config /etc/pbx-bridge/pbx-bridge.toml."""
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert any(op == "RUN" and "pip install ." in arg for op, arg in steps)
    entrypoint = next(arg for op, arg in steps if op == "ENTRYPOINT")
    cmd = next(arg for op, arg in steps if op == "CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == [
        "pbx-bridge",
        "run",
        "--config",
        "/etc/pbx-bridge/pbx-bridge.toml",
    ]
    assert any(op == "USER" and arg != "root" for op, arg in steps)


def test_dockerfile_copies_only_existing_sources() -> None:
    """Every COPY source exists in the build context (a wildcard may match nothing)."""
    for op, arg in _instructions():
        if op != "COPY":
            continue
        *sources, _ = shlex.split(arg)
        for source in sources:
            if any(ch in source for ch in "*?["):
                continue
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert any(not any(ch in s for ch in "*?[") for s in sources), arg
