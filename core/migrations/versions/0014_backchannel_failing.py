"""oidc clients: when back-channel logout to the app last gave up, for the admin pages"""

from alembic import op

from core.migrations.shapes import moment

revision = '0014_backchannel_failing'
down_revision = '0013_oidc_refresh_tokens'


def upgrade() -> None:
    op.add_column('oidc_clients', moment('backchannel_failing_since', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oidc_clients') as batch:
        batch.drop_column('backchannel_failing_since')
