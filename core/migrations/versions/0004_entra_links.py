"""Microsoft Entra identities linked to staff logins"""

from alembic import op

from core.migrations.shapes import OF_STAFF, create_table, moment, string, uuid_id, uuid_ref

revision = '0004'
down_revision = '0003'


def upgrade() -> None:
    create_table(
        'entra_links',
        uuid_id(),
        uuid_ref('staff_id'),
        string('tenant_id', 64),
        string('object_id', 64),
        string('display_name', 200),
        string('email', 320),
        string('linked_via', 20),
        moment('linked_at'),
        moment('last_sign_in_at', nullable=True),
        cascades=OF_STAFF,
        unique=('staff_id', ('tenant_id', 'object_id')),
        unique_name='uq_entra_identity',
    )


def downgrade() -> None:
    op.drop_table('entra_links')
