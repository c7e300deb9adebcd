"""sign-in throttling, session activity, rate counters"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import create_table, moment, string

revision = '0003'
down_revision = '0002'


def upgrade() -> None:
    create_table(
        'rate_counters',
        string('key', 200),
        moment('window_start'),
        sa.Column('count', sa.Integer(), nullable=False),
        pk='key',
    )
    with op.batch_alter_table('browser_sessions') as batch_op:
        batch_op.add_column(moment('last_seen_at', nullable=True))
        batch_op.add_column(sa.Column('data', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.alter_column('staff_id', existing_type=sa.Uuid(), nullable=True)
    with op.batch_alter_table('sso_accounts') as batch_op:
        batch_op.add_column(moment('last_sign_in_at', nullable=True))
        batch_op.add_column(sa.Column('failed_sign_ins', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(moment('locked_until', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sso_accounts') as batch_op:
        for column in ('locked_until', 'failed_sign_ins', 'last_sign_in_at'):
            batch_op.drop_column(column)
    with op.batch_alter_table('browser_sessions') as batch_op:
        batch_op.alter_column('staff_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column('data')
        batch_op.drop_column('last_seen_at')
    op.drop_table('rate_counters')
