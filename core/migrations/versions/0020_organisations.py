"""organisations (agencies): every person in one, Entra tenants owned by one, keys scoped to one

Everyone already here moves into the default organisation, and so do the tenants the
deployment's settings allow (SSO_ENTRA_TENANT_ID / SSO_ENTRA_ALLOWED_TENANTS)."""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import create_index, create_table, moment, string, uuid_id, uuid_ref
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_NAME, DEFAULT_ORG_SLUG, configured_tenants

revision = '0020_organisations'
down_revision = '0019_staff_disable'


def upgrade() -> None:
    organisations = create_table(
        'organisations',
        uuid_id(),
        string('name', 200),
        string('slug', 63),
        string('status', 20),
        string('mfa_policy', 20, nullable=True),
        string('sender_name', 200, nullable=True),
        moment('suspended_at', nullable=True),
        moment('created_at'),
        moment('updated_at'),
        unique=('slug',),
    )
    tenants = create_table(
        'organisation_tenants',
        string('tenant_id', 36),
        uuid_ref('org_id'),
        moment('created_at'),
        pk='tenant_id',
        cascades={'org_id': 'organisations.id'},
    )
    create_index('organisation_tenants', 'ix_organisation_tenants_org_id', 'org_id')
    now = sa.func.now()
    op.execute(
        organisations.insert().values(
            id=DEFAULT_ORG_ID,
            name=DEFAULT_ORG_NAME,
            slug=DEFAULT_ORG_SLUG,
            status='active',
            created_at=now,
            updated_at=now,
        )
    )
    for tenant in sorted(configured_tenants()):
        op.execute(tenants.insert().values(tenant_id=tenant, org_id=DEFAULT_ORG_ID, created_at=now))

    with op.batch_alter_table('staff') as batch:
        batch.add_column(uuid_ref('org_id', nullable=True))
        batch.add_column(sa.Column('is_operator', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(sa.text('UPDATE staff SET org_id = :org').bindparams(sa.bindparam('org', DEFAULT_ORG_ID, sa.Uuid())))
    with op.batch_alter_table('staff') as batch:
        batch.alter_column('org_id', existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key('fk_staff_org_id', 'organisations', ['org_id'], ['id'])
        batch.create_index('ix_staff_org_id', ['org_id'])
        batch.create_check_constraint('ck_staff_operator_is_admin', 'NOT is_operator OR is_admin')

    with op.batch_alter_table('admin_api_keys') as batch:
        batch.add_column(uuid_ref('org_id', nullable=True))
        batch.create_foreign_key(
            'fk_admin_api_keys_org_id', 'organisations', ['org_id'], ['id'], ondelete='CASCADE'
        )


def downgrade() -> None:
    with op.batch_alter_table('admin_api_keys') as batch:
        batch.drop_constraint('fk_admin_api_keys_org_id', type_='foreignkey')
        batch.drop_column('org_id')
    with op.batch_alter_table('staff') as batch:
        batch.drop_constraint('ck_staff_operator_is_admin', type_='check')
        batch.drop_index('ix_staff_org_id')
        batch.drop_constraint('fk_staff_org_id', type_='foreignkey')
        batch.drop_column('is_operator')
        batch.drop_column('org_id')
    op.drop_index('ix_organisation_tenants_org_id', table_name='organisation_tenants')
    op.drop_table('organisation_tenants')
    op.drop_table('organisations')
