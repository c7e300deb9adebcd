"""staff: when a person was disabled (a leaver), and the account status enabling restores"""

from alembic import op

from core.migrations.shapes import moment, string

revision = '0019_staff_disable'
down_revision = '0018_passkeys'


def upgrade() -> None:
    op.add_column('staff', moment('disabled_at', nullable=True))
    op.add_column('sso_accounts', string('status_before_disable', 20, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sso_accounts') as batch:
        batch.drop_column('status_before_disable')
    with op.batch_alter_table('staff') as batch:
        batch.drop_column('disabled_at')
