"""job indexes for the scheduler's reads: the newest jobs (prefetch demand reads the last 200
submitted) and a pool's last finished jobs (its expected run time); both scanned every job

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 11:00:00.000000
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_pool_state_finished_at", "jobs", ["pool", "state", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_pool_state_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
