"""What an erasure test looks for: a person's name or address anywhere in the database, and in
the decoded history of any of their flows."""

from __future__ import annotations

from sqlalchemy import JSON, String, Text, select
from temporalio.client import Client
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode

from core.db import SessionFactory
from core.models import Base
from tests.support.workflows import payloads


async def personal_rows(sessions: SessionFactory, needles: list[str]) -> list[str]:
    """Every text value in every table that contains one of `needles` (case-insensitive)."""
    lowered = [needle.lower() for needle in needles]
    found = []
    async with sessions() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | JSON)]
            if not columns:
                continue
            for row in (await session.execute(select(*columns))).all():
                for column, value in zip(columns, row, strict=True):
                    if value is not None and any(n in str(value).lower() for n in lowered):
                        found.append(f"{table.name}.{column.name}: {value}")
    return found


async def history_text(client: Client, codec: PayloadCodec, workflow_id: str, run_id: str) -> str | None:
    """The run's whole history with every payload decoded (the codec's key, as ops would read
    it), lower-cased; None once the run was deleted. The raw events hold the ids and metadata;
    the decoded payloads what the flow carried ("staff_id" is a field name only they hold)."""
    try:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    encoded = [payload for event in history.events for _path, payload in payloads(event)]
    decoded = await codec.decode(encoded)
    text = [history.to_json()] + [payload.data.decode(errors="replace") for payload in decoded]
    return "\n".join(text).lower()
