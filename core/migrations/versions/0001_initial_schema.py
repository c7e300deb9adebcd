"""initial schema"""

import sqlalchemy as sa

from core.migrations.shapes import OF_STAFF, create_index, create_table, drop_table
from core.migrations.shapes import moment, string, text, uuid_id, uuid_ref

revision = '0001'
down_revision = None


def upgrade() -> None:
    create_table(
        'admin_api_keys',
        uuid_id(),
        string('name', 100),
        string('key_hash', 128),
        moment('created_at'),
        moment('last_used_at', nullable=True),
        moment('revoked_at', nullable=True),
        unique=('key_hash',),
    )
    create_table(
        'audit_events',
        uuid_id(),
        moment('occurred_at'),
        string('actor', 200),
        string('action', 100),
        string('target', 100, nullable=True),
        string('outcome', 30),
        string('ip', 64, nullable=True),
        sa.Column('details', sa.JSON(), nullable=False),
    )
    create_index('audit_events', 'ix_audit_target', 'target', 'occurred_at')
    create_table(
        'outbox_emails',
        uuid_id(),
        string('to_address', 320),
        string('subject', 300),
        text('body_encrypted'),
        moment('created_at'),
    )
    create_table(
        'staff',
        uuid_id(),
        string('first_name', 100),
        string('last_name', 100),
        string('external_email_1', 320),
        moment('created_at'),
        moment('updated_at'),
        unique=('external_email_1',),
    )
    create_table(
        'setup_links',
        uuid_id(),
        uuid_ref('staff_id'),
        string('workflow_id', 100),
        string('run_id', 100),
        string('token_hash', 128),
        moment('expires_at'),
        moment('created_at'),
        moment('consumed_at', nullable=True),
        moment('revoked_at', nullable=True),
        cascades=OF_STAFF,
        unique=('token_hash',),
    )
    create_index('setup_links', 'ix_setup_links_staff', 'staff_id')
    create_table(
        'sso_accounts',
        uuid_id(),
        uuid_ref('staff_id'),
        string('login_email', 320),
        text('password_hash', nullable=True),
        moment('verified_at', nullable=True),
        text('totp_secret_encrypted', nullable=True),
        string('status', 20),
        moment('created_at'),
        moment('updated_at'),
        cascades=OF_STAFF,
        unique=('login_email', 'staff_id'),
    )
    create_table(
        'sso_setups',
        uuid_id(),
        uuid_ref('staff_id'),
        string('workflow_id', 100),
        string('run_id', 100, nullable=True),
        string('state', 30),
        moment('state_since'),
        moment('link_expires_at', nullable=True),
        string('email_delivery', 20),
        sa.Column('email_attempts', sa.Integer(), nullable=False),
        text('email_last_error', nullable=True),
        text('failure_reason', nullable=True),
        string('requested_by', 200),
        moment('created_at'),
        cascades=OF_STAFF,
        unique=('run_id',),
    )
    create_index('sso_setups', 'ix_sso_setups_staff', 'staff_id', 'created_at')


def downgrade() -> None:
    drop_table('sso_setups', 'ix_sso_setups_staff')
    drop_table('sso_accounts')
    drop_table('setup_links', 'ix_setup_links_staff')
    drop_table('staff')
    drop_table('outbox_emails')
    drop_table('audit_events', 'ix_audit_target')
    drop_table('admin_api_keys')
