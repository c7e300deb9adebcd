"""oidc provider: client apps, authorization grants, token signing keys"""

import sqlalchemy as sa

from core.migrations.shapes import OF_STAFF, create_index, create_table, drop_table
from core.migrations.shapes import moment, string, text, uuid_id, uuid_ref

revision = '0009_oidc_provider'
down_revision = '0008'


def upgrade() -> None:
    create_table(
        'oidc_clients',
        uuid_id(),
        string('client_id', 64),
        string('client_name', 200),
        sa.Column('registration', sa.JSON(), nullable=False),
        string('secret_hash', 128, nullable=True),
        moment('disabled_at', nullable=True),
        moment('created_at'),
        moment('updated_at'),
        unique=('client_id',),
    )
    create_table(
        'oidc_grants',
        uuid_id(),
        string('code_hash', 128),
        string('client_id', 64),
        uuid_ref('staff_id'),
        text('redirect_uri'),
        text('scope'),
        sa.Column('claims', sa.JSON(), nullable=False),
        string('code_challenge', 128, nullable=True),
        moment('expires_at'),
        moment('redeemed_at', nullable=True),
        moment('revoked_at', nullable=True),
        moment('created_at'),
        cascades={**OF_STAFF, 'client_id': 'oidc_clients.client_id'},
        unique=('code_hash',),
    )
    create_index('oidc_grants', 'ix_oidc_grants_staff', 'staff_id')
    create_table(
        'oidc_signing_keys',
        string('kid', 64),
        string('alg', 10),
        sa.Column('public_jwk', sa.JSON(), nullable=False),
        text('private_sealed'),
        moment('signs_from'),
        moment('retire_at', nullable=True),
        moment('created_at'),
        pk='kid',
    )


def downgrade() -> None:
    drop_table('oidc_signing_keys')
    drop_table('oidc_grants', 'ix_oidc_grants_staff')
    drop_table('oidc_clients')
