"""reset code failures counted across flows; reset links"""

from core.migrations.shapes import create_index, create_table, drop_table, moment, string, uuid_id, uuid_ref

revision = '0007'
down_revision = '0006_email_sends'


def upgrade() -> None:
    create_table(
        'reset_code_failures',
        uuid_id(),
        string('subject', 100),
        string('flow', 100),
        moment('failed_at'),
    )
    create_index('reset_code_failures', 'ix_reset_code_failures_subject', 'subject', 'failed_at')
    create_table(
        'reset_links',
        uuid_id(),
        uuid_ref('account_id'),
        string('workflow_id', 100),
        string('token_hash', 128),
        moment('expires_at'),
        moment('created_at'),
        moment('consumed_at', nullable=True),
        cascades={'account_id': 'sso_accounts.id'},
        unique=('token_hash',),
    )
    create_index('reset_links', 'ix_reset_links_account', 'account_id')


def downgrade() -> None:
    drop_table('reset_links', 'ix_reset_links_account')
    drop_table('reset_code_failures', 'ix_reset_code_failures_subject')
