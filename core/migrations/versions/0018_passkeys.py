"""passkeys: each person's WebAuthn credentials (public keys, counters, backup flags)"""

import sqlalchemy as sa

from core.migrations.shapes import create_index, create_table, drop_table, moment, string, text, uuid_id, uuid_ref

revision = '0018_passkeys'
down_revision = '0016_mfa_obligation'


def upgrade() -> None:
    create_table(
        'passkeys',
        uuid_id(),
        uuid_ref('account_id'),
        string('credential_id', 1400),
        text('public_key'),
        sa.Column('sign_count', sa.BigInteger(), nullable=False),
        sa.Column('transports', sa.JSON(), nullable=False),
        string('name', 100),
        sa.Column('backup_eligible', sa.Boolean(), nullable=False),
        sa.Column('backed_up', sa.Boolean(), nullable=False),
        moment('created_at'),
        moment('last_used_at', nullable=True),
        cascades={'account_id': 'sso_accounts.id'},
        unique=('credential_id',),
    )
    create_index('passkeys', 'ix_passkeys_account', 'account_id')


def downgrade() -> None:
    drop_table('passkeys', 'ix_passkeys_account')
