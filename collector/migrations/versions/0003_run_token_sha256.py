"""run ownership: the run's token hash

Revision ID: 0003_run_token
Revises: 0002_idle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_run_token"
down_revision = "0002_idle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: runs stored before run ownership have no owner (read as "no token").
    op.add_column("run", sa.Column("run_token_sha256", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("run_token_sha256")
