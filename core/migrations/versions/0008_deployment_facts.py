"""deployment facts: when payloads started to be bound to their flow"""

from datetime import UTC, datetime

from alembic import op

from core.migrations.shapes import create_table, moment, string

revision = '0008'
down_revision = '0007'


def upgrade() -> None:
    facts = create_table('deployment_facts', string('name', 64), moment('at'), pk='name')
    # The deploy that brings flow-bound payloads: flows running then still replay payloads
    # written without a binding, for a grace period counted from here (core.deployment).
    op.bulk_insert(facts, [{'name': 'payload_binding_since', 'at': datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table('deployment_facts')
