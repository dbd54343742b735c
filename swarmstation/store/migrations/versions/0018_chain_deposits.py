"""chain deposits (issue 13; reserved for C4 — fill upgrade/downgrade, keep the revision ids)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 08:00:00.000000
"""

from alembic import op  # noqa: F401

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
