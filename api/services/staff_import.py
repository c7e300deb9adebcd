"""CSV import of staff: read the file as Excel writes it, check every row, then create the
good rows (each audited as a single create) and, if asked, send them their Single Sign-On
emails through one staff batch."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.bulk_schemas import ImportProblem, ImportRow
from api.schemas import StaffCreate
from api.services.staff import address_refusal, create_staff, email_holders
from api.services.staff_batches import StaffBatches
from core import audit
from core.batches import MAX_BATCH_SIZE
from core.errors import SsoError, TooLarge
from core.models import Staff
from core.orgs import AdminScope

MAX_IMPORT_BYTES = 2 * 1024 * 1024
IN_USE = "already belongs to a staff member"
MAX_IMPORT_ROWS = MAX_BATCH_SIZE
REQUIRED_COLUMNS = ("first_name", "last_name", "external_email_1")
COLUMNS = (*REQUIRED_COLUMNS, "is_admin")
TRUE_WORDS = {"true", "yes", "y", "1"}
FALSE_WORDS = {"false", "no", "n", "0", ""}


@dataclass
class CheckedRow:
    row: int
    values: dict[str, str]
    is_admin: bool | None
    problems: list[ImportProblem] = field(default_factory=list)
    data: StaffCreate | None = None

    def problem(self, column: str | None, error: str) -> None:
        self.problems.append(ImportProblem(row=self.row, column=column, error=error))

    def shown(self, outcome: str) -> ImportRow:
        return ImportRow(
            row=self.row,
            outcome=outcome,  # type: ignore[arg-type]
            first_name=self.values.get("first_name", ""),
            last_name=self.values.get("last_name", ""),
            external_email_1=self.values.get("external_email_1", ""),
            is_admin=self.is_admin,
            errors=self.problems,
        )


def _column_name(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


def read_rows(body: bytes) -> list[tuple[int, dict[str, str]]]:
    """The data rows, each with its row number in the file (the header is row 1, and blank
    rows count, as a spreadsheet shows them)."""
    if len(body) > MAX_IMPORT_BYTES:
        raise TooLarge(
            f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB; split it into smaller files"
        )
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SsoError(
            'The file is not UTF-8 text; in Excel, save it as "CSV UTF-8 (Comma delimited)"'
        ) from None
    records = list(csv.reader(io.StringIO(text, newline="")))
    number, header = next(
        ((n, r) for n, r in enumerate(records, start=1) if any(c.strip() for c in r)), (0, [])
    )
    if not header:
        raise SsoError("The file is empty; its first row must name the columns: " + ", ".join(COLUMNS))
    names = [_column_name(h) for h in header]
    unknown = [h for h, name in zip(header, names, strict=True) if name not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or repeated:
        problems = [f"unknown column {h!r}" for h in unknown] + [f"missing column {c!r}" for c in missing]
        problems += [f"column {c!r} appears twice" for c in repeated]
        raise SsoError(
            f"Row {number} must name the columns {', '.join(COLUMNS)} (is_admin is optional): "
            + "; ".join(problems)
        )
    rows = []
    for row, record in enumerate(records[number:], start=number + 1):
        if not any(cell.strip() for cell in record):
            continue
        values = dict(zip(names, record, strict=False))
        # Cells past the header's columns (a stray comma): kept so the row is refused, not cut.
        extra = [cell for cell in record[len(names) :] if cell.strip()]
        if extra:
            values[""] = ",".join(extra)
        rows.append((row, values))
    if len(rows) > MAX_IMPORT_ROWS:
        raise TooLarge(f"The file has {len(rows):,} people; import at most {MAX_IMPORT_ROWS:,} at a time")
    return rows


def _is_admin(row: CheckedRow) -> bool | None:
    word = row.values.get("is_admin", "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    row.problem("is_admin", "must be TRUE or FALSE (yes/no and 1/0 work too)")
    return None


def check_row(row: int, values: dict[str, str]) -> CheckedRow:
    checked = CheckedRow(row=row, values=values, is_admin=None)
    if "" in values:
        checked.problem(None, f"has more cells than the header names columns ({values['']!r} is extra)")
    checked.is_admin = _is_admin(checked)
    fields = {name: values.get(name, "") for name in REQUIRED_COLUMNS}
    try:
        checked.data = StaffCreate.model_validate({**fields, "is_admin": bool(checked.is_admin)})
    except ValidationError as exc:
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else None
            blank = column in fields and not fields[column].strip()
            checked.problem(column, "is required" if blank else str(error["msg"]))
    if checked.problems:
        checked.data = None
    return checked


async def check_file(
    session: AsyncSession, body: bytes, scope: AdminScope, org_id: uuid.UUID
) -> list[CheckedRow]:
    """Every row checked for people of `org_id`: its own fields, an address repeated in the
    file, an address in use (said as `create_staff` says it: another organisation's address
    is named to an operator only)."""
    rows = [check_row(row, values) for row, values in read_rows(body)]
    first_row: dict[str, int] = {}
    for checked in rows:
        if checked.data is None:
            continue
        email = checked.data.external_email_1.lower()
        if email in first_row:
            checked.problem("external_email_1", f"repeats the address of row {first_row[email]}")
            checked.data = None
        else:
            first_row[email] = checked.row
    in_use = await email_holders(session, list(first_row))
    for checked in rows:
        holder = in_use.get(checked.data.external_email_1.lower()) if checked.data is not None else None
        if holder is not None:
            problem = IN_USE if holder == org_id else await address_refusal(session, holder, scope, org_id)
            checked.problem("external_email_1", problem)
            checked.data = None
    return rows


@dataclass
class ImportOutcome:
    rows: list[CheckedRow]
    created: list[Staff]
    batch_id: uuid.UUID | None


@dataclass
class StaffImports:
    batches: StaffBatches

    async def preview(self, body: bytes, scope: AdminScope, org_id: uuid.UUID) -> list[CheckedRow]:
        return await check_file(self.batches.session, body, scope, org_id)

    async def run(
        self, body: bytes, send_email: bool, scope: AdminScope, ip: str | None, org_id: uuid.UUID
    ) -> ImportOutcome:
        """The good rows created as people of `org_id` (see `creation_org`)."""
        session = self.batches.session
        rows = await check_file(session, body, scope, org_id)
        created = [await create_staff(session, r.data, scope, ip, org_id) for r in rows if r.data is not None]
        audit.record(
            session,
            actor=scope.actor,
            action="staff.import",
            outcome="success",
            ip=ip,
            created=str(len(created)),
            skipped=str(sum(1 for r in rows if r.data is None)),
        )
        batch_id = None
        if send_email and created:
            batch = await self.batches.create([s.id for s in created], scope, ip)
            batch_id = batch.id
        return ImportOutcome(rows=rows, created=created, batch_id=batch_id)
