"""ledger and holds (issue 13; reserved for C1 — fill upgrade/downgrade, keep the revision ids)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 08:00:00.000000
"""

from alembic import op  # noqa: F401

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
