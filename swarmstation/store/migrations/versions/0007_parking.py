"""parking: pools keep stopped instances for a quick resume

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_parked", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("park_max_hours", sa.Float(), server_default="24", nullable=False))
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("parked_at")
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("park_max_hours")
        batch_op.drop_column("max_parked")
