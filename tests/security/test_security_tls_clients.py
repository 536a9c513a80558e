"""The marker client (`parawatt`, which the trainer uses) and the sweep's cool-down client reach
an mTLS daemon with the PARAWATT_TLS_* environment (the same client options as every client)."""

from __future__ import annotations

import pytest

import parawatt
from tests.security.certs import make_certs
from tests.support.markers import count_by_kind, wait_for_markers
from trainer.sweep.cooldown import DaemonThermometer
from trainer.sweep.grid import SweepError


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki") / "site", "node1")


@pytest.fixture
def mtls_daemon(start_sim_daemon, certs, tmp_path):
    return start_sim_daemon(**certs.daemon_config(), marker_socket=str(tmp_path / "m.sock"))


def _tls_env(monkeypatch, certs) -> None:
    monkeypatch.setenv("PARAWATT_TLS_CA", str(certs.ca))
    monkeypatch.setenv("PARAWATT_TLS_CERT", str(certs.client_cert))
    monkeypatch.setenv("PARAWATT_TLS_KEY", str(certs.client_key))


def test_marker_client_sends_over_mtls_with_the_environment(mtls_daemon, certs, monkeypatch):
    _tls_env(monkeypatch, certs)
    run = parawatt.track(daemon=mtls_daemon.address, run_id="tls-run", config={"model": "m"})
    with run, run.epoch():
        run.step()
    local = f"unix:{mtls_daemon.daemon.marker_socket}"
    markers = wait_for_markers(local, lambda ms: len(ms) == 6, run_id="tls-run")
    assert count_by_kind(markers) == {"RUN_START": 1, "EPOCH_START": 1, "STEP_START": 1,
                                      "STEP_END": 1, "EPOCH_END": 1, "RUN_END": 1}  # fmt: skip


def test_cooldown_thermometer_reads_over_mtls(mtls_daemon, certs, monkeypatch):
    with DaemonThermometer(mtls_daemon.address, tls=certs.client_tls()) as thermo:
        assert set(thermo.gpu_temperatures()) == set(mtls_daemon.uuids)
    _tls_env(monkeypatch, certs)
    with DaemonThermometer(mtls_daemon.address) as thermo:
        assert len(thermo.gpu_temperatures()) == 2
    monkeypatch.delenv("PARAWATT_TLS_CA")
    monkeypatch.delenv("PARAWATT_TLS_CERT")
    monkeypatch.delenv("PARAWATT_TLS_KEY")
    with DaemonThermometer(mtls_daemon.address) as thermo, pytest.raises(SweepError) as info:
        thermo.gpu_temperatures()
    assert "closed the connection: it may require TLS" in str(info.value)
    with pytest.raises(SweepError, match="no socket path"):
        DaemonThermometer("unix:")


@pytest.mark.parametrize(
    ("env", "message"),
    [({"PARAWATT_TLS_CA": "/no/such/ca.crt"}, "cannot read TLS CA bundle '/no/such/ca.crt'"),
     ({"PARAWATT_TLS_CERT": "/x.crt"}, "a TLS client certificate needs its key")],
)  # fmt: skip
def test_trainer_refuses_unusable_tls_environment_before_training(env, message):
    from click.testing import CliRunner

    from trainer.cli import main

    result = CliRunner().invoke(main, ["train", "--quiet", "--daemon", "127.0.0.1:50051"], env=env)
    assert result.exit_code == 2
    assert (
        f"{message}" in result.output and "(from the PARAWATT_TLS_* environment)" in result.output
    )
