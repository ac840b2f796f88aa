"""Spare-parts stock per place (a warehouse's shelves, a vehicle's load) and its ledger.

Every change goes through ``move``/``use``/``set_quantity`` in the caller's transaction and leaves a
``stock_movements`` row, so the stock of a part anywhere can be explained after the fact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.errors import IronSightError

Place = tuple[str, str]  # (place_kind, place_id): ('warehouse', 'W1') or ('vehicle', 'V1')
# A cursor of any row factory (Cursor is covariant in its row type): the functions taking one only
# execute statements on it and test whether a row came back, never read a row's columns.
AnyCursor = psycopg.Cursor[object]


class OutOfStock(IronSightError):
    """The part is no longer where it was planned to be taken from (HTTP 409)."""


def move(cur: AnyCursor, part: str, quantity: int, source: Place, target: Place, *, ticket_id: int | None,
         reason: str, at: datetime) -> None:
    taken = cur.execute(
        """UPDATE part_stock SET quantity = quantity - %s
           WHERE place_kind = %s AND place_id = %s AND part = %s AND quantity >= %s RETURNING quantity""",
        (quantity, *source, part, quantity),
    ).fetchone()
    if taken is None:
        raise OutOfStock(f"{part!r} is out of stock at {source[0]} {source[1]}")
    _add(cur, target, part, quantity)
    _record(cur, at, part, quantity, source, target, ticket_id, reason)


def use(cur: AnyCursor, part: str, quantity: int, source: Place, *, ticket_id: int | None,
        at: datetime) -> dict[str, Any]:
    """Take parts used in a repair out of ``source``; what it did not hold is reported as a shortfall
    (the engineer got it elsewhere), never refused: the repair happened."""
    # Plain tuples whatever the caller's row factory: same connection, same transaction.
    row = cur.connection.execute("SELECT quantity FROM part_stock WHERE place_kind = %s AND place_id = %s "
                                 "AND part = %s FOR UPDATE", (*source, part)).fetchone()
    taken = min(quantity, row[0]) if row else 0
    if taken:
        cur.execute("UPDATE part_stock SET quantity = quantity - %s WHERE place_kind = %s AND place_id = %s "
                    "AND part = %s", (taken, *source, part))
        _record(cur, at, part, taken, source, None, ticket_id, "used in repair")
    return {"part": part, "used": quantity, "from_stock": taken, "shortfall": quantity - taken}


def set_quantity(cur: AnyCursor, place: Place, part: str, quantity: int, *, reason: str,
                 at: datetime) -> None:
    """Set the stock counted at a place (a delivery, an inventory count)."""
    before = cur.connection.execute(
        "SELECT quantity FROM part_stock WHERE place_kind = %s AND place_id = %s AND part = %s", (*place, part),
    ).fetchone()
    cur.execute(
        """INSERT INTO part_stock (place_kind, place_id, part, quantity) VALUES (%s, %s, %s, %s)
           ON CONFLICT (place_kind, place_id, part) DO UPDATE SET quantity = EXCLUDED.quantity""",
        (*place, part, quantity),
    )
    change = quantity - (before[0] if before else 0)
    if change:
        _record(cur, at, part, change, None, place, None, reason)


def _add(cur: AnyCursor, place: Place, part: str, quantity: int) -> None:
    cur.execute(
        """INSERT INTO part_stock (place_kind, place_id, part, quantity) VALUES (%s, %s, %s, %s)
           ON CONFLICT (place_kind, place_id, part) DO UPDATE SET quantity = part_stock.quantity + EXCLUDED.quantity""",
        (*place, part, quantity),
    )


def _record(cur: AnyCursor, at: datetime, part: str, quantity: int, source: Place | None,
            target: Place | None, ticket_id: int | None, reason: str) -> None:
    cur.execute(
        """INSERT INTO stock_movements (at, part, quantity, from_kind, from_id, to_kind, to_id, ticket_id, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (at, part, quantity, *(source or (None, None)), *(target or (None, None)), ticket_id, reason),
    )


def stock_at(conn: psycopg.Connection, place_kind: str, place_id: str) -> dict[str, int]:
    rows = conn.execute("SELECT part, quantity FROM part_stock WHERE place_kind = %s AND place_id = %s ORDER BY part",
                        (place_kind, place_id)).fetchall()
    return {part: quantity for part, quantity in rows}


def totals_by_part(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT part, sum(quantity) FILTER (WHERE place_kind = 'warehouse')::int AS in_warehouses,
                      sum(quantity) FILTER (WHERE place_kind = 'vehicle')::int AS in_vehicles
               FROM part_stock GROUP BY part ORDER BY part""").fetchall()
