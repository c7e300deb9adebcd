"""oidc refresh tokens: rotated token families, bound to the browser session they came from"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import create_index, create_table, drop_table, moment, string, text, uuid_id
from core.migrations.shapes import uuid_ref

revision = '0013_oidc_refresh_tokens'
down_revision = '0012_recovery_codes'


def upgrade() -> None:
    op.add_column('oidc_grants', sa.Column('session_hash', sa.String(length=128), nullable=True))
    create_table(
        'oidc_refresh_tokens',
        uuid_id(),
        string('token_hash', 128),
        uuid_ref('grant_id'),
        text('scope'),
        moment('rotated_at', nullable=True),
        moment('created_at'),
        cascades={'grant_id': 'oidc_grants.id'},
        unique=('token_hash',),
    )
    create_index('oidc_refresh_tokens', 'ix_oidc_refresh_tokens_grant', 'grant_id')


def downgrade() -> None:
    drop_table('oidc_refresh_tokens', 'ix_oidc_refresh_tokens_grant')
    with op.batch_alter_table('oidc_grants') as batch:
        batch.drop_column('session_hash')
