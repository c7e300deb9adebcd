"""reset code failures counted across flows; reset links

Revision ID: 0007
Revises: 0006_email_sends
Create Date: 2026-12-06 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006_email_sends'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'reset_code_failures',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('subject', sa.String(length=100), nullable=False),
        sa.Column('flow', sa.String(length=100), nullable=False),
        sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_reset_code_failures_subject', 'reset_code_failures',
                    ['subject', 'failed_at'])
    op.create_table(
        'reset_links',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('account_id', sa.Uuid(), nullable=False),
        sa.Column('workflow_id', sa.String(length=100), nullable=False),
        sa.Column('token_hash', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('consumed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['sso_accounts.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_index('ix_reset_links_account', 'reset_links', ['account_id'])


def downgrade() -> None:
    op.drop_index('ix_reset_links_account', table_name='reset_links')
    op.drop_table('reset_links')
    op.drop_index('ix_reset_code_failures_subject', table_name='reset_code_failures')
    op.drop_table('reset_code_failures')
