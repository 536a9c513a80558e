"""Deployment files and scripts: least privilege, no default secrets, nothing stopped or left
running that the scripts did not start. Checked with the real tools where this machine has them
(openssl, systemd-analyze, systemd-tmpfiles, docker-compose 1.29)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.security.certs import make_certs
from tests.support.torchrun import REPO

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "parawatt-power-daemon.service"
COMPOSE = REPO / ".venv-compose" / "bin" / "docker-compose"
NO_STARTS = REPO / "scripts" / "no-service-starts.sh"


def test_make_certs_builds_a_ca_and_certificates_for_the_given_names(tmp_path):
    certs = make_certs(tmp_path / "pki", "gpu01", "10.0.0.7", "fd00::7")
    for name in ("daemon", "collector", "client", "metrics"):
        out = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(certs.dir / f"{name}.crt")],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert (certs.dir / f"{name}.key").stat().st_mode & 0o007 == 0  # no access for others
    assert (certs.dir / "ca.key").stat().st_mode & 0o077 == 0
    text = subprocess.run(["openssl", "x509", "-in", str(certs.daemon_cert), "-noout", "-text"],
                          capture_output=True, text=True).stdout  # fmt: skip
    for san in ("DNS:gpu01", "IP Address:10.0.0.7", "IP Address:FD00:0:0:0:0:0:0:7",
                "DNS:localhost", "IP Address:127.0.0.1", "TLS Web Server Authentication"):  # fmt: skip
        assert san in text, san
    client = subprocess.run(["openssl", "x509", "-in", str(certs.collector_cert), "-noout", "-text"],
                            capture_output=True, text=True).stdout  # fmt: skip
    assert "TLS Web Client Authentication" in client and "Server Authentication" not in client
    # A second run adds hosts with the same CA (trust already handed out stays valid).
    ca = certs.ca.read_bytes()
    make_certs(certs.dir, "gpu02")
    assert certs.ca.read_bytes() == ca


def test_make_certs_without_names_prints_usage(tmp_path):
    out = subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("usage:")


def test_setup_script_never_stops_what_it_did_not_start():
    text = (REPO / "scripts" / "setup.sh").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"\b(pkill|killall|kill)\b", code)
    assert not re.search(r"systemctl\s+(stop|kill|restart)", code)
    assert "scripts/no-service-starts.sh apt-get install" in code


def _policy_during(tmp_path: Path, policy: Path, command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLICY_RC_D=str(policy))
    return subprocess.run(["sh", str(NO_STARTS), "sh", "-c", command], env=env,
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip


def test_no_service_starts_forbids_starts_during_the_command_then_removes_its_policy(tmp_path):
    policy = tmp_path / "policy-rc.d"
    out = _policy_during(tmp_path, policy, f'{policy} prometheus start; echo "policy=$?"')
    assert out.stdout.strip() == "policy=101"  # what invoke-rc.d / deb-systemd-invoke obey
    assert not policy.exists()
    failed = _policy_during(tmp_path, policy, "exit 7")  # also after a failed install
    assert failed.returncode == 7 and not policy.exists()


def test_no_service_starts_leaves_an_existing_policy_alone(tmp_path):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the administrator's\nexit 0\n")
    policy.chmod(0o755)
    out = _policy_during(tmp_path, policy, f'{policy} x start; echo "policy=$?"')
    assert out.stdout.strip() == "policy=0"
    assert policy.read_text() == "#!/bin/sh\n# the administrator's\nexit 0\n"


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_runs_with_least_privilege():
    unit = _unit()
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("CapabilityBoundingSet", ""), ("User", "parawatt")]:  # fmt: skip
        assert unit.get(key) == [value], key
    assert not any("CAP_" in v for values in unit.values() for v in values)  # no capability
    assert unit.get("AmbientCapabilities") in (None, [""])
    # real-time scheduling for the sampler by rlimit, capped at priority 1, not by capability
    assert unit.get("LimitRTPRIO") == ["1"] and "RestrictRealtime" not in unit
    start = unit["ExecStart"][0]
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--marker-socket /run/parawatt/"):
        assert flag in start
    assert unit["RuntimeDirectory"] == ["parawatt"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_passes_systemd_analyze(tmp_path):
    # The installed path does not exist here; everything else is checked as systemd reads it.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/parawatt/venv/bin/power-daemon", "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [ln for ln in out.stderr.splitlines() if UNIT.name in ln]
    assert out.returncode == 0 and problems == [], out.stderr


@pytest.mark.skipif(not shutil.which("systemd-tmpfiles"), reason="systemd-tmpfiles not installed")
def test_tmpfiles_entry_gives_rapl_to_the_parawatt_group_only(tmp_path):
    zones = tmp_path / "sys" / "class" / "powercap"
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1"):
        (zones / zone).mkdir(parents=True)
        (zones / zone / "energy_uj").write_text("123\n")
        (zones / zone / "energy_uj").chmod(0o400)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text("parawatt:x:990:\n")
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    conf = DEPLOY / "tmpfiles.d" / "parawatt-rapl.conf"
    out = subprocess.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(conf)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for energy in zones.glob("*/energy_uj"):
        st = energy.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o440, 990), energy


def test_udev_rule_gives_rapl_to_the_parawatt_group():
    rule = [ln for ln in (DEPLOY / "udev" / "99-parawatt-rapl.rules").read_text().splitlines()
            if ln and not ln.startswith("#")]  # fmt: skip
    assert len(rule) == 1
    assert 'SUBSYSTEM=="powercap"' in rule[0]
    assert "chgrp parawatt /sys%p/energy_uj" in rule[0] and "chmod 0440 /sys%p/energy_uj" in rule[0]


def _compose(*args: str, password: str | None = "s3cret") -> subprocess.CompletedProcess:
    if not COMPOSE.exists():
        pytest.skip("docker-compose not installed (scripts/setup.sh installs it in .venv-compose)")
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run([str(COMPOSE), "-f", str(REPO / "docker-compose.yml"), *args, "config"],
                          capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip


def test_compose_has_no_default_database_password():
    out = _compose(password=None)
    assert out.returncode != 0
    assert "set POSTGRES_PASSWORD" in out.stderr
    text = (REPO / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD:-" not in text
    rendered = _compose("--profile", "node").stdout
    assert "postgresql+psycopg://parawatt@postgres" in rendered  # not in the command line


def test_compose_defaults_are_closed():
    rendered = _compose("--profile", "node")
    assert rendered.returncode == 0, rendered.stderr
    text = rendered.stdout
    assert (
        "GF_AUTH_ANONYMOUS_ENABLED: 'false'" in text or 'GF_AUTH_ANONYMOUS_ENABLED: "false"' in text
    )
    images = re.findall(r"^\s*image: (\S+)$", text, re.M)
    assert len(images) >= 4
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), image
    assert re.search(r"^FROM \S+:\d+\.\d+\.\d+-", (DEPLOY / "Dockerfile").read_text(), re.M)
    # Daemon and collector speak mutual TLS with certificates from the documented place.
    assert text.count("/etc/parawatt/tls:ro") == 2
    daemon = text.split("\n  power-daemon:\n", 1)[1].split("\n  prometheus:\n", 1)[0]
    for flag in ("--tls-cert", "--tls-client-ca", "--marker-socket"):
        assert f"- {flag}" in daemon
    collector = text.split("\n  collector:\n", 1)[1].split("\n  postgres:\n", 1)[0]
    for flag in ("--tls-ca", "--tls-cert", "--tls-key"):
        assert f"- {flag}" in collector
    # What has no login of its own is published on the host's loopback only.
    assert "127.0.0.1:9464:9464" in (REPO / "docker-compose.yml").read_text()
    assert "127.0.0.1:9090:9090" in (REPO / "docker-compose.yml").read_text()
