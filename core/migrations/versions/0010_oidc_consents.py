"""oidc consents: the apps each person has allowed to sign them in"""

from core.migrations.shapes import OF_STAFF, create_table, drop_table
from core.migrations.shapes import moment, string, text, uuid_id, uuid_ref

revision = '0010_oidc_consents'
down_revision = '0009_oidc_provider'


def upgrade() -> None:
    create_table(
        'oidc_consents',
        uuid_id(),
        uuid_ref('staff_id'),
        string('client_id', 64),
        text('scope'),
        moment('granted_at'),
        cascades={**OF_STAFF, 'client_id': 'oidc_clients.client_id'},
        unique=(('staff_id', 'client_id'),),
        unique_name='uq_oidc_consent',
    )


def downgrade() -> None:
    drop_table('oidc_consents')
