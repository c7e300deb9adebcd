"""indexes for housekeeping: each purge batch finds its old rows by these columns, not a scan
of the whole table (core/retention.py)"""

from alembic import op

from core.migrations.shapes import create_index

revision = '0024_retention_indexes'
down_revision = '0023_org_suspension_done'

INDEXES = (
    ('email_sends', 'ix_email_sends_created', 'created_at'),
    ('outbox_emails', 'ix_outbox_emails_created', 'created_at'),
    ('browser_sessions', 'ix_browser_sessions_expires', 'expires_at'),
    ('rate_counters', 'ix_rate_counters_window', 'window_start'),
    ('reset_code_failures', 'ix_reset_code_failures_failed', 'failed_at'),
    ('setup_links', 'ix_setup_links_expires', 'expires_at'),
    ('reset_links', 'ix_reset_links_expires', 'expires_at'),
    ('oidc_grants', 'ix_oidc_grants_session', 'session_hash'),
)


def upgrade() -> None:
    for table, name, column in INDEXES:
        create_index(table, name, column)


def downgrade() -> None:
    for table, name, _ in INDEXES:
        op.drop_index(name, table_name=table)
