"""staff batches: bulk sends and their people, and the hourly email budget they count against"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import (
    OF_STAFF,
    create_index,
    create_table,
    drop_table,
    moment,
    string,
    text,
    uuid_id,
    uuid_ref,
)

revision = "0022_staff_batches"
down_revision = "0021_staff_lifecycle"


def upgrade() -> None:
    create_table(
        "staff_batches",
        uuid_id(),
        # The organisation whose people the batch sends to (one per batch; its admins see it).
        uuid_ref("org_id"),
        string("action", 30),
        string("state", 40),
        string("requested_by", 200),
        sa.Column("total", sa.Integer(), nullable=False),
        moment("wait_until", nullable=True),
        moment("created_at"),
        moment("updated_at"),
        cascades={"org_id": "organisations.id"},
    )
    create_index("staff_batches", "ix_staff_batches_org_id", "org_id")
    create_table(
        "staff_batch_items",
        uuid_id(),
        uuid_ref("batch_id"),
        uuid_ref("staff_id"),
        sa.Column("position", sa.Integer(), nullable=False),
        string("status", 20),
        uuid_ref("setup_id", nullable=True),
        text("error", nullable=True),
        moment("updated_at"),
        cascades={"batch_id": "staff_batches.id", **OF_STAFF},
        unique=(("batch_id", "staff_id"),),
    )
    create_index("staff_batch_items", "ix_staff_batch_items_next", "batch_id", "status", "position")
    # A setup's welcome email asks whether a batch already counted it against the budget.
    create_index("staff_batch_items", "ix_staff_batch_items_setup", "setup_id")
    # Keyed by (budget, hour): one row per budget per clock hour.
    op.create_table(
        "email_budget_hours",
        string("budget_key", 100),
        moment("hour"),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("budget_key", "hour"),
    )


def downgrade() -> None:
    drop_table("email_budget_hours")
    drop_table("staff_batch_items", "ix_staff_batch_items_next", "ix_staff_batch_items_setup")
    drop_table("staff_batches", "ix_staff_batches_org_id")
