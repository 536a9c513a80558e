"""The deployment files are valid for the real tools that read them.

docker-compose 1.29 (its own venv, made by scripts/setup.sh) validates the compose file offline;
promtool validates the Prometheus config and rules; the Grafana dashboard's queries are checked
against a real Prometheus in test_deploy_prometheus.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = REPO / ".venv-compose" / "bin" / "docker-compose"


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "parawatt.json").read_text())


# What Grafana sends with every template variable at "All" (allValue ".*").
ALL = {"$node": ".*", "$gpu": ".*", "$run": ".*"}


def expand(expr: str, values: dict[str, str] = ALL) -> str:
    for name, value in values.items():
        expr = expr.replace(name, value)
    return expr


def dashboard_queries(values: dict[str, str] = ALL) -> list[tuple[str, str]]:
    return [
        (p["title"], expand(t["expr"], values)) for p in dashboard()["panels"] for t in p["targets"]
    ]


@pytest.mark.parametrize("profile", [None, "node"])
def test_compose_file_is_valid(profile: str | None) -> None:
    if not COMPOSE.exists():
        pytest.skip("docker-compose not installed (scripts/setup.sh installs it in .venv-compose)")
    args = [str(COMPOSE), "-f", str(REPO / "docker-compose.yml")]
    if profile:
        args += ["--profile", profile]
    out = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    services = out.stdout.split("\nservices:\n", 1)[-1]
    for name in ["collector", "postgres", "prometheus", "grafana", "power-daemon"]:
        assert f"\n  {name}:\n" in "\n" + services
    # The per-node daemon is only started with --profile node (docker-compose 1.29's `config`
    # lists every service; the profile is what keeps it off the cluster host).
    daemon = services.split("\n  power-daemon:\n", 1)[1].split("\n  prometheus:\n", 1)[0]
    assert "profiles:\n    - node" in daemon
    assert "network_mode: host" in daemon


def test_compose_mounts_exist() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for rel in [
        "deploy/Dockerfile",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/rules.yml",
        "deploy/prometheus/daemons",
        "deploy/grafana/provisioning",
        "deploy/grafana/dashboards",
    ]:
        assert rel in text
        assert (REPO / rel).exists(), rel


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (scripts/setup.sh installs Debian's prometheus)")
    return path


def test_prometheus_config_and_rules_pass_promtool(promtool: str) -> None:
    for args in (
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_is_well_formed() -> None:
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"datasource", "node", "gpu", "run"}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dash["panels"]:  # no hard-coded datasource: the variable picks it
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "parawatt" in target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"
            assert "$" not in expand(target["expr"]), target["expr"]  # only known variables
    # Only names the collector exports (checked live in test_deploy_prometheus.py).
    assert len(dashboard_queries()) >= 10


def test_promql_of_every_panel_parses(promtool: str) -> None:
    # promtool has no plain "parse" verb; a rules file with each expression as a recording rule
    # makes it parse every query exactly as Prometheus will.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": expr}
                    for i, (_, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "dashboard-rules.json"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
