"""logout outbox: back-channel logouts owed for ended sessions, written with the session end"""

import sqlalchemy as sa

from core.migrations.shapes import create_index, create_table, drop_table, moment, string, uuid_ref

revision = '0015_account_grants_outbox'
down_revision = '0014_backchannel_failing'


def upgrade() -> None:
    create_table(
        'logout_outbox',
        string('sid', 64),
        uuid_ref('staff_id'),
        sa.Column('client_ids', sa.JSON(), nullable=False),
        moment('created_at'),
        pk='sid',
    )
    create_index('logout_outbox', 'ix_logout_outbox_created', 'created_at')


def downgrade() -> None:
    drop_table('logout_outbox', 'ix_logout_outbox_created')
