"""lora staging progress: approval stages the file in the background (issue 12)

`loras.staging_bytes_done` / `staging_bytes_total` show how far the download of a LoRA in the new
`staging` state has come; `failure_reason` says why staging failed (`deployment_failed`), apart
from `moderation_reason`, which keeps the reviewer's words. Existing failures move their reason
over; a downgrade fails LoRAs still staging, since the older code knows no `staging` state.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 07:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("loras", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("staging_bytes_done", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("staging_bytes_total", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("failure_reason", sa.Text(), server_default="", nullable=False))
    op.execute(
        "UPDATE loras SET failure_reason = moderation_reason, moderation_reason = '' "
        "WHERE moderation_status = 'deployment_failed'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE loras SET moderation_status = 'deployment_failed', "
        "failure_reason = 'staging interrupted by a downgrade; approve again' "
        "WHERE moderation_status = 'staging'"
    )
    op.execute(
        "UPDATE loras SET moderation_reason = failure_reason WHERE moderation_status = 'deployment_failed'"
    )
    with op.batch_alter_table("loras", schema=None) as batch_op:
        batch_op.drop_column("failure_reason")
        batch_op.drop_column("staging_bytes_total")
        batch_op.drop_column("staging_bytes_done")
