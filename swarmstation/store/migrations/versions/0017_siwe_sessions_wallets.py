"""siwe sessions wallets (issue 13; reserved for C3 — fill upgrade/downgrade, keep the revision ids)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 08:00:00.000000
"""

from alembic import op  # noqa: F401

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
