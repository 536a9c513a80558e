"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT and JSONB.
PK_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_T = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node")),
        sa.UniqueConstraint("hostname", name=op.f("uq_node_hostname")),
    )
    op.create_table(
        "run",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=255), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("global_batch_size", sa.BigInteger(), nullable=False),
        sa.Column("local_batch_size", sa.BigInteger(), nullable=False),
        sa.Column("accumulation_steps", sa.Integer(), nullable=False),
        sa.Column("parameter_count", sa.BigInteger(), nullable=False),
        sa.Column("dataset_size", sa.BigInteger(), nullable=False),
        sa.Column("epochs_planned", sa.Integer(), nullable=False),
        sa.Column("steps_per_epoch", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("amp", sa.Boolean(), nullable=False),
        sa.Column("device_name", sa.String(length=255), nullable=False),
        sa.Column("recipe", JSON_T, nullable=False),
        sa.Column("tags", JSON_T, nullable=False),
        sa.Column("software", JSON_T, nullable=False),
        sa.Column("hardware", JSON_T, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=True),
        sa.Column("metrics", JSON_T, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run")),
    )
    op.create_table(
        "boot",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", PK_INT, nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("driver_version", sa.String(length=64), nullable=False),
        sa.Column("daemon_version", sa.String(length=64), nullable=False),
        sa.Column("interval_ns", sa.BigInteger(), nullable=False),
        sa.Column("started_ns", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name=op.f("fk_boot_node_id_node")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot")),
        sa.UniqueConstraint("boot_id", name=op.f("uq_boot_boot_id")),
    )
    with op.batch_alter_table("boot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_boot_node_id"), ["node_id"], unique=False)

    op.create_table(
        "device",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("uuid", sa.String(length=255), nullable=False),
        sa.Column("node_id", PK_INT, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("vendor_index", sa.BigInteger(), nullable=False),
        sa.Column("power_limit_w", sa.Float(), nullable=True),
        sa.Column("memory_total_bytes", sa.Float(), nullable=True),
        sa.Column("has_energy_counter", sa.Boolean(), nullable=False),
        sa.Column("has_instant_power", sa.Boolean(), nullable=False),
        sa.Column("power_avg_window_s", sa.Float(), nullable=True),
        sa.Column("counter_update_s", sa.Float(), nullable=True),
        sa.Column("counter_resolution_j", sa.Float(), nullable=True),
        sa.Column("idle_power_w", sa.Float(), nullable=True),
        sa.Column("idle_measured_ns", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"], name=op.f("fk_device_node_id_node")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device")),
        sa.UniqueConstraint("uuid", name=op.f("uq_device_uuid")),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_node_id"), ["node_id"], unique=False)

    op.create_table(
        "run_rank",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("local_rank", sa.Integer(), nullable=False),
        sa.Column("device_uuid", sa.String(length=255), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_temperature_c", sa.Float(), nullable=True),
        sa.Column("idle_power_w", sa.Float(), nullable=True),
        sa.Column("metrics", JSON_T, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.run_id"], name=op.f("fk_run_rank_run_id_run")),
        sa.PrimaryKeyConstraint("run_id", "rank", name=op.f("pk_run_rank")),
    )
    op.create_table(
        "ingest_cursor",
        sa.Column("boot_id", PK_INT, nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["boot_id"], ["boot.id"], name=op.f("fk_ingest_cursor_boot_id_boot")
        ),
        sa.PrimaryKeyConstraint("boot_id", name=op.f("pk_ingest_cursor")),
    )
    with op.batch_alter_table("ingest_cursor", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_cursor_address"), ["address"], unique=False)

    op.create_table(
        "interval",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("device_id", PK_INT, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("energy_j", sa.Float(), nullable=True),
        sa.Column("active_energy_j", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("power_integral_j", sa.Float(), nullable=True),
        sa.Column("uncertainty_j", sa.Float(), nullable=True),
        sa.Column("avg_power_w", sa.Float(), nullable=True),
        sa.Column("max_power_w", sa.Float(), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=False),
        sa.Column("flags", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_interval_device_id_device")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interval")),
        sa.UniqueConstraint(
            "run_id",
            "rank",
            "kind",
            "epoch",
            "step",
            "device_id",
            name=op.f("uq_interval_run_id_rank_kind_epoch_step_device_id"),
        ),
    )
    with op.batch_alter_table("interval", schema=None) as batch_op:
        batch_op.create_index("ix_interval_run_kind_step", ["run_id", "kind", "step"], unique=False)

    op.create_table(
        "marker",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("time_ns", sa.BigInteger(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("device_uuid", sa.String(length=255), nullable=False),
        sa.Column("local_rank", sa.Integer(), nullable=False),
        sa.Column("boot_id", PK_INT, nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("metrics", JSON_T, nullable=False),
        sa.ForeignKeyConstraint(["boot_id"], ["boot.id"], name=op.f("fk_marker_boot_id_boot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marker")),
        sa.UniqueConstraint(
            "run_id",
            "rank",
            "kind",
            "epoch",
            "step",
            name=op.f("uq_marker_run_id_rank_kind_epoch_step"),
        ),
    )
    op.create_table(
        "reading",
        sa.Column("boot_id", PK_INT, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("device_id", PK_INT, nullable=False),
        sa.Column("time_ns", sa.BigInteger(), nullable=False),
        sa.Column("lost", sa.Boolean(), nullable=False),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("power_avg_w", sa.Float(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=True),
        sa.Column("gpu_util_pct", sa.Float(), nullable=True),
        sa.Column("mem_util_pct", sa.Float(), nullable=True),
        sa.Column("memory_used_bytes", sa.Float(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("sm_clock_mhz", sa.Float(), nullable=True),
        sa.Column("mem_clock_mhz", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("boot_id", "seq", name=op.f("pk_reading")),
    )
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reading_time_ns"), ["time_ns"], unique=False)

    op.create_table(
        "reading_1s",
        sa.Column("device_id", PK_INT, nullable=False),
        sa.Column("second", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("avg_power_w", sa.Float(), nullable=True),
        sa.Column("max_power_w", sa.Float(), nullable=True),
        sa.Column("energy_first_j", sa.Float(), nullable=True),
        sa.Column("energy_last_j", sa.Float(), nullable=True),
        sa.Column("avg_gpu_util_pct", sa.Float(), nullable=True),
        sa.Column("max_temperature_c", sa.Float(), nullable=True),
        sa.Column("avg_sm_clock_mhz", sa.Float(), nullable=True),
        sa.Column("max_memory_used_bytes", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_reading_1s_device_id_device")
        ),
        sa.PrimaryKeyConstraint("device_id", "second", name=op.f("pk_reading_1s")),
    )
    op.create_table(
        "stream_gap",
        sa.Column("id", PK_INT, nullable=False),
        sa.Column("boot_id", PK_INT, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("previous_boot", sa.String(length=64), nullable=True),
        sa.Column("detected_ns", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["boot_id"], ["boot.id"], name=op.f("fk_stream_gap_boot_id_boot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_gap")),
        sa.UniqueConstraint(
            "boot_id", "kind", "first_seq", name=op.f("uq_stream_gap_boot_id_kind_first_seq")
        ),
    )


def downgrade() -> None:
    op.drop_table("stream_gap")
    op.drop_table("reading_1s")
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reading_time_ns"))

    op.drop_table("reading")
    op.drop_table("marker")
    with op.batch_alter_table("interval", schema=None) as batch_op:
        batch_op.drop_index("ix_interval_run_kind_step")

    op.drop_table("interval")
    with op.batch_alter_table("ingest_cursor", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_cursor_address"))

    op.drop_table("ingest_cursor")
    op.drop_table("run_rank")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_node_id"))

    op.drop_table("device")
    with op.batch_alter_table("boot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_boot_node_id"))

    op.drop_table("boot")
    op.drop_table("run")
    op.drop_table("node")
