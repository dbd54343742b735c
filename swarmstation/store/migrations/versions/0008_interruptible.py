"""interruptible: pools may rent bid (interruptible) instances

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # pools that existed before keep renting on-demand
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rental", sa.String(length=20), server_default="on-demand", nullable=False)
        )
        batch_op.add_column(sa.Column("bid_margin", sa.Float(), server_default="1.1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("bid_margin")
        batch_op.drop_column("rental")
