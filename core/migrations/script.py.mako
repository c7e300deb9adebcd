"""${message}"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
# Column and table shapes the migrations share (ids, times, strings, foreign keys, indexes).
from core.migrations.shapes import create_index, create_table, drop_table, moment, string, text, uuid_id, uuid_ref

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
