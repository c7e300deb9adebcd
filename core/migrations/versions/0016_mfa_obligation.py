"""mfa obligations: each person's MFA enrolment obligation, as its flow last recorded it"""

import sqlalchemy as sa

from core.migrations.shapes import OF_STAFF, create_table, drop_table, moment, string, uuid_ref

revision = '0016_mfa_obligation'
down_revision = '0015_account_grants_outbox'


def upgrade() -> None:
    create_table(
        'mfa_obligations',
        uuid_ref('staff_id'),
        string('run_id', 64),
        string('policy', 20),
        string('step', 20),
        moment('started_at'),
        moment('due_at'),
        sa.Column('reminders_sent', sa.Integer(), nullable=False),
        string('extended_by', 200, nullable=True),
        moment('updated_at'),
        pk='staff_id',
        cascades=OF_STAFF,
    )


def downgrade() -> None:
    drop_table('mfa_obligations')
