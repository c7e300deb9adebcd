"""setup steps: sessions, mfa columns"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import OF_STAFF, create_index, create_table, drop_table, moment, string, uuid_ref

revision = '0002'
down_revision = '0001'


def upgrade() -> None:
    create_table(
        'browser_sessions',
        string('id_hash', 128),
        uuid_ref('staff_id'),
        string('purpose', 20),
        string('workflow_id', 100, nullable=True),
        string('run_id', 100, nullable=True),
        moment('created_at'),
        moment('expires_at'),
        moment('revoked_at', nullable=True),
        pk='id_hash',
        cascades=OF_STAFF,
    )
    create_index('browser_sessions', 'ix_browser_sessions_staff', 'staff_id')
    with op.batch_alter_table('sso_accounts') as batch_op:
        batch_op.add_column(moment('mfa_enabled_at', nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
        batch_op.add_column(moment('activated_at', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sso_accounts') as batch_op:
        for column in ('activated_at', 'totp_last_step', 'mfa_enabled_at'):
            batch_op.drop_column(column)
    drop_table('browser_sessions', 'ix_browser_sessions_staff')
