"""email sends: one row per requested email, so a retried send repeats the same secret

Revision ID: 0006_email_sends
Revises: 0005
Create Date: 2026-12-06 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006_email_sends'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'email_sends',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('request_key', sa.String(length=300), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('staff_id', sa.Uuid(), nullable=True),
        sa.Column('secret_sealed', sa.Text(), nullable=True),
        sa.Column('digest', sa.String(length=128), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('handovers', sa.Integer(), nullable=False),
        sa.Column('in_flight', sa.Boolean(), nullable=False),
        sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('request_key'),
    )
    op.create_index('ix_email_sends_staff', 'email_sends', ['staff_id'])


def downgrade() -> None:
    op.drop_index('ix_email_sends_staff', table_name='email_sends')
    op.drop_table('email_sends')
