"""email sends: one row per requested email, so a retried send repeats the same secret"""

import sqlalchemy as sa

from core.migrations.shapes import OF_STAFF, create_index, create_table, drop_table
from core.migrations.shapes import moment, string, text, uuid_id, uuid_ref

revision = '0006_email_sends'
down_revision = '0005'


def upgrade() -> None:
    create_table(
        'email_sends',
        uuid_id(),
        string('request_key', 300),
        string('kind', 40),
        uuid_ref('staff_id', nullable=True),
        text('secret_sealed', nullable=True),
        string('digest', 128, nullable=True),
        moment('expires_at', nullable=True),
        sa.Column('handovers', sa.Integer(), nullable=False),
        sa.Column('in_flight', sa.Boolean(), nullable=False),
        moment('accepted_at', nullable=True),
        moment('created_at'),
        cascades=OF_STAFF,
        unique=('request_key',),
    )
    create_index('email_sends', 'ix_email_sends_staff', 'staff_id')


def downgrade() -> None:
    drop_table('email_sends', 'ix_email_sends_staff')
