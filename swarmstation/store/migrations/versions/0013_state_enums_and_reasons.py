"""state enums and reasons: every state change records its trigger (issue 12)

`job_events.trigger` and `instance_transitions.trigger` name what moved the row (`LEASE_EXPIRED`,
`BREAKER_TRIPPED`, ...: the triggers of `domain/states.py`), so that a RUNNING -> QUEUED change
says why. Rows written before this migration, a job's submission and an instance's creation have
none. The state columns keep their VARCHAR(20): the models now read them as enums
(`native_enum=False`), which needs no change in the database.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 07:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger", sa.String(length=30), nullable=True))
    with op.batch_alter_table("instance_transitions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger", sa.String(length=30), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance_transitions", schema=None) as batch_op:
        batch_op.drop_column("trigger")
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_column("trigger")
