"""instance infra failures: a circuit breaker on instances that fail jobs for machine reasons

`instances.consecutive_infra_failures` counts the jobs an instance failed in a row because of the
machine (ComfyUI gone, disk); `jobs.infra_requeues` counts how often a job went back to the queue
for such a failure without spending an attempt (bounded, so no job bounces forever).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consecutive_infra_failures", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("infra_requeues", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("infra_requeues")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("consecutive_infra_failures")
