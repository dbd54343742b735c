"""pool target utilisation

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target_utilisation", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("utilisation_grace_seconds", sa.Float(), server_default="60", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("utilisation_grace_seconds")
        batch_op.drop_column("target_utilisation")
