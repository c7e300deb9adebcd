"""The column and table shapes the migrations repeat.

Each call builds new objects (a Column belongs to one table). Migrations already applied use
these, so what a helper builds must never change: add a new helper rather than alter one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The foreign key of a row that belongs to a staff member and goes with them.
OF_STAFF = {"staff_id": "staff.id"}


def uuid_id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), nullable=False)


def uuid_ref(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Uuid(), nullable=nullable)


def string(name: str, length: int, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def text(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable)


def moment(name: str, *, nullable: bool = False) -> sa.Column:
    """A point in time, stored with its time zone."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def create_table(
    name: str,
    *columns: sa.Column,
    pk: str = "id",
    cascades: dict[str, str] | None = None,
    unique: tuple[str | tuple[str, ...], ...] = (),
    unique_name: str | None = None,
) -> sa.Table:
    """A table with its primary key, its foreign keys (deleting the row they point to
    deletes this one) and its unique columns. `unique_name` names the last unique
    constraint; the others keep the database's own names."""
    constraints: list[sa.Constraint] = [
        sa.ForeignKeyConstraint([column], [target], ondelete="CASCADE")
        for column, target in (cascades or {}).items()
    ]
    constraints.append(sa.PrimaryKeyConstraint(pk))
    for number, columns_of in enumerate(unique, start=1):
        named = unique_name if number == len(unique) else None
        names = (columns_of,) if isinstance(columns_of, str) else columns_of
        constraints.append(sa.UniqueConstraint(*names, name=named))
    return op.create_table(name, *columns, *constraints)


def create_index(table: str, name: str, *columns: str) -> None:
    op.create_index(name, table, list(columns), unique=False)


def drop_table(table: str, *indexes: str) -> None:
    for index in indexes:
        op.drop_index(index, table_name=table)
    op.drop_table(table)
