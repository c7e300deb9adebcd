"""staff: the day a person leaves, and a new External Email 1 waiting for its code, and
the old address until it has been told of the change; what Graph last said of a linked
Microsoft account"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import moment, string

revision = '0021_staff_lifecycle'
down_revision = '0020_organisations'


def upgrade() -> None:
    op.add_column('staff', sa.Column('leave_on', sa.Date(), nullable=True))
    op.add_column('staff', string('pending_external_email_1', 320, nullable=True))
    op.add_column('staff', string('previous_external_email_1', 320, nullable=True))
    op.add_column('entra_links', string('account_state', 20, nullable=True))
    op.add_column('entra_links', moment('account_checked_at', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('entra_links') as batch:
        batch.drop_column('account_checked_at')
        batch.drop_column('account_state')
    with op.batch_alter_table('staff') as batch:
        batch.drop_column('previous_external_email_1')
        batch.drop_column('pending_external_email_1')
        batch.drop_column('leave_on')
