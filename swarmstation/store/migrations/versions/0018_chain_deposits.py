"""chain deposits: transfers to the treasuries of configured EVM chains, and the scanner's cursors

`deposits` holds one row per transfer to a treasury (or per refused transaction), unique per
(chain_id, tx_hash, log_index), the native value of a transaction being log index -1; `state`
follows domain/deposits.py. `chain_cursors` keeps, per chain, the last block that was scanned
and is final, so that the scanner resumes there after a restart.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("sender", sa.String(length=42), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=True),
        sa.Column("token", sa.String(length=42), nullable=True),
        sa.Column("amount", sa.String(length=80), server_default="0", nullable=False),
        sa.Column("credits", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("reported_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credited_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("credits >= 0", name="ck_deposits_credits_not_negative"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["reported_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_deposits_chain_tx_log", "deposits", ["chain_id", "tx_hash", "log_index"], unique=True)
    op.create_index("ix_deposits_chain_state", "deposits", ["chain_id", "state"])
    op.create_index("ix_deposits_sender", "deposits", ["sender"])
    op.create_index("ix_deposits_user_id", "deposits", ["user_id"])
    op.create_table(
        "chain_cursors",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id"),
    )


def downgrade() -> None:
    op.drop_table("chain_cursors")
    op.drop_index("ix_deposits_user_id", table_name="deposits")
    op.drop_index("ix_deposits_sender", table_name="deposits")
    op.drop_index("ix_deposits_chain_state", table_name="deposits")
    op.drop_index("ux_deposits_chain_tx_log", table_name="deposits")
    op.drop_table("deposits")
