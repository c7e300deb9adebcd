"""organisations: when a suspension's flow finished ending its people's sessions and flows"""

import sqlalchemy as sa
from alembic import op

from core.migrations.shapes import moment

revision = '0023_org_suspension_done'
down_revision = '0022_staff_batches'


def upgrade() -> None:
    op.add_column('organisations', moment('suspension_done_at', nullable=True))
    # Suspended before this: their sessions were ended inside the suspending request.
    organisations = sa.table('organisations', sa.column('status'), sa.column('suspended_at'), sa.column('suspension_done_at'))
    op.execute(
        organisations.update()
        .where(organisations.c.status == 'suspended')
        .values(suspension_done_at=organisations.c.suspended_at)
    )


def downgrade() -> None:
    with op.batch_alter_table('organisations') as batch:
        batch.drop_column('suspension_done_at')
