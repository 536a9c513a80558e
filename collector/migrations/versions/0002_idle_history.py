"""idle history: per device, stretches of idle seconds (collector.join.idle); interval's worst-case
uncertainty bound next to its calibrated 95 % half-width; device sensor facts

Revision ID: 0002_idle
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

PK_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0002_idle"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idle_bucket",
        sa.Column("device_id", PK_INT, nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("low_w", sa.Float(), nullable=False),
        sa.Column("median_w", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_idle_bucket_device_id_device")
        ),
        sa.PrimaryKeyConstraint("device_id", "start_ns", name=op.f("pk_idle_bucket")),
    )
    with op.batch_alter_table("interval", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uncertainty_bound_j", sa.Float(), nullable=True))
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partial_coverage", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("sensor_method", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("sensor_method")
        batch_op.drop_column("partial_coverage")
    with op.batch_alter_table("interval", schema=None) as batch_op:
        batch_op.drop_column("uncertainty_bound_j")
    op.drop_table("idle_bucket")
