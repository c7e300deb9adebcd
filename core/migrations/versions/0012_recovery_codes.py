"""recovery codes: keyed digests of each person's single-use MFA recovery codes"""

from core.migrations.shapes import create_index, create_table, drop_table, moment, string, uuid_id, uuid_ref

revision = '0012_recovery_codes'
down_revision = '0010_oidc_consents'


def upgrade() -> None:
    create_table(
        'recovery_codes',
        uuid_id(),
        uuid_ref('account_id'),
        string('digest', 128),
        moment('created_at'),
        moment('used_at', nullable=True),
        cascades={'account_id': 'sso_accounts.id'},
        unique=('digest',),
    )
    create_index('recovery_codes', 'ix_recovery_codes_account', 'account_id')


def downgrade() -> None:
    drop_table('recovery_codes', 'ix_recovery_codes_account')
