"""Tables that fit the terminal: a table too wide for the console is split into several, each
repeating the key column, instead of letting rich squeeze every column into "vari…"."""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table


_UNBOUNDED = 100_000


@dataclass(frozen=True)
class Column:
    header: str
    cells: list[str] = field(default_factory=list)
    justify: str = "right"


def _table(title: str | None, key: Column, columns: list[Column]) -> Table:
    table = Table(title=title)
    for col in (key, *columns):
        table.add_column(col.header, justify=col.justify)  # type: ignore[arg-type]
    for i, key_cell in enumerate(key.cells):
        table.add_row(key_cell, *(c.cells[i] for c in columns))
    return table


def natural_width(console: Console, table: Table) -> int:
    """The width the table takes when no cell is wrapped or cut (measured without the console's
    own limit, which would clamp it)."""
    return console.measure(table, options=console.options.update_width(_UNBOUNDED)).maximum


def fitted_tables(console: Console, title: str, key: Column, columns: list[Column]) -> list[Table]:
    """One table with every column when it fits the console, else as few tables as fit (columns
    kept in order, greedily), each with the key column first. A single column wider than the
    console still gets a table of its own: rich wraps it, nothing better is possible."""
    width = console.width
    groups: list[list[Column]] = []
    current: list[Column] = []
    for col in columns:
        if current and natural_width(console, _table(None, key, [*current, col])) > width:
            groups.append(current)
            current = []
        current.append(col)
    if current or not groups:
        groups.append(current)
    return [_table(title if i == 0 else None, key, group) for i, group in enumerate(groups)]
