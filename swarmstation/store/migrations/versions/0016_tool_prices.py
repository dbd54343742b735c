"""tool prices and job charges (issue 13): `tool_prices` (the price model an admin set for a tool:
per_run, per_megapixel or per_gpu_second with a cap) and `job_charges` (each charged job's plan at
submission — its quote, held — and what settlement captured, with the royalties paid from it).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_prices",
        sa.Column("tool_slug", sa.String(length=63), nullable=False),
        sa.Column("model", sa.String(length=20), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=True),
        sa.Column("updated_by", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tool_slug"], ["tools.slug"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tool_slug"),
    )
    op.create_table(
        "job_charges",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("hold_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("quote", sa.BigInteger(), nullable=False),
        sa.Column("unit_credits", sa.BigInteger(), nullable=False),
        sa.Column("per_second", sa.String(length=50), nullable=False),
        sa.Column("output_pixels", sa.BigInteger(), nullable=True),
        sa.Column("output_images", sa.Integer(), nullable=True),
        sa.Column("royalties", sa.JSON(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=True),
        sa.Column("royalties_paid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_job_charges_user_id", "job_charges", ["user_id"])
    op.create_index("ix_job_charges_settled_at", "job_charges", ["settled_at"])


def downgrade() -> None:
    op.drop_index("ix_job_charges_settled_at", table_name="job_charges")
    op.drop_index("ix_job_charges_user_id", table_name="job_charges")
    op.drop_table("job_charges")
    op.drop_table("tool_prices")
