"""The terminal tables of `collector show`: an epoch's metrics cell stays readable."""

from __future__ import annotations

from collector.report import text


def _epoch(metrics: dict) -> dict:
    return {"epoch": 0, "steps": 20, "duration_s": 1.39, "energy_j": 328.6,
            "active_energy_j": None, "avg_power_w": 236.6, "metrics": metrics,
            "flags": ["idle_unknown"]}  # fmt: skip


def test_epoch_table_shows_headline_metrics_and_counts_the_rest():
    per_channel = {f"eval_rmse_c{i}": 0.5 + i / 100 for i in range(20)}
    per_channel |= {f"eval_acc_c{i}": 0.9 for i in range(20)}
    metrics = {"train_loss": 0.8317, "eval_loss": 0.6216, "eval_rmse_mean": 0.67,
               "eval_acc_mean": 0.8228, "duration_s": 1.348, **per_channel}  # fmt: skip
    table = text.render([_epoch(metrics)], text.EPOCH_COLUMNS, "table")
    row = table.splitlines()[-1]
    assert "train_loss=0.8317 eval_loss=0.6216 eval_rmse_mean=0.67 eval_acc_mean=0.8228" in row
    assert f"(+{len(metrics) - 4} more)" in row and "eval_rmse_c0" not in row
    assert max(len(line) for line in table.splitlines()) <= 160
    # JSON and CSV still carry every metric.
    assert "eval_rmse_c19" in text.render([_epoch(metrics)], text.EPOCH_COLUMNS, "json")
    assert "eval_rmse_c19=" in text.render([_epoch(metrics)], text.EPOCH_COLUMNS, "csv")


def test_metrics_without_headline_keys_show_the_first_few():
    row = text.render([_epoch({"c": 3.0, "a": 1.0, "b": 2.0, "d": 4.0})], text.EPOCH_COLUMNS,
                      "table").splitlines()[-1]  # fmt: skip
    assert "a=1 b=2 c=3 (+1 more)" in row
    assert "-" in row  # active energy unknown
