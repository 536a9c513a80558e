"""Out-of-range numbers on the collector's command line are usage errors, not tracebacks."""

from __future__ import annotations

from click.testing import CliRunner

from collector.cli import main


def test_a_rank_past_int64_is_a_usage_error(tmp_path):
    """`collector steps RUN --rank 99999999999999999999` raised OverflowError from SQLite."""
    db = f"sqlite:///{tmp_path / 'p.db'}"
    for rank in ("99999999999999999999", "2147483648", "-1"):
        result = CliRunner().invoke(main, ["steps", "r1", "--db", db, "--rank", rank])
        assert result.exit_code == 2, result.output
        assert "--rank" in result.output and "Traceback" not in result.output
        assert not isinstance(result.exception, OverflowError)
