"""deployment facts: when payloads started to be bound to their flow

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:20:00
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    facts = op.create_table(
        'deployment_facts',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    # The deploy that brings flow-bound payloads: flows running then still replay payloads
    # written without a binding, for a grace period counted from here (core.deployment).
    op.bulk_insert(facts, [{'name': 'payload_binding_since', 'at': datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table('deployment_facts')
