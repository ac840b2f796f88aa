"""The spare-parts catalogue: part numbers, names, the equipment models each part fits, list prices;
and what a customer sees of the parts for one machine, with where they are in stock.

A part's ``name`` is the name stock (``part_stock.part``) and the diagnosis use for it: the catalogue
is what ties a part number to its stock. Availability counts warehouses only; what sits in a van is
already promised to a visit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import one
from core.errors import IronSightError
from core.geo import distance_km

_COLUMNS = "part_number, name, description, models, list_price, currency, updated_at"


class NameTaken(IronSightError):
    """Another part number already has this name (HTTP 409): stock could not tell them apart."""


@dataclass(frozen=True, slots=True)
class CataloguePart:
    part_number: str
    name: str
    description: str = ""
    models: tuple[str, ...] = ()
    list_price: Decimal | None = None
    currency: str | None = None   # ISO 4217; set exactly when list_price is


def upsert_part(conn: psycopg.Connection, part: CataloguePart, *, at: datetime) -> dict[str, Any]:
    """Add or replace the entry of ``part.part_number``; returns it as stored."""
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            return one(cur.execute(
                f"""INSERT INTO parts_catalogue ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (part_number) DO UPDATE SET name = EXCLUDED.name,
                        description = EXCLUDED.description, models = EXCLUDED.models,
                        list_price = EXCLUDED.list_price, currency = EXCLUDED.currency,
                        updated_at = EXCLUDED.updated_at
                    RETURNING {_COLUMNS}""",
                _values(part, at)))
    except psycopg.errors.UniqueViolation:
        raise NameTaken(f"another part number is already named {part.name!r}") from None


def add_missing(conn: psycopg.Connection, parts: Iterable[CataloguePart], *, at: datetime) -> int:
    """Add the parts not catalogued yet (by number or by name); the ones there are left as staff
    keep them. Returns how many were added."""
    added = 0
    with conn.cursor() as cur:
        for part in parts:
            cur.execute(f"INSERT INTO parts_catalogue ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING", _values(part, at))
            added += cur.rowcount
    return added


def _values(part: CataloguePart, at: datetime) -> tuple[Any, ...]:
    return (part.part_number, part.name, part.description, sorted(set(part.models)), part.list_price,
            part.currency, at)


def _matching(text: str | None, model: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of "fits ``model`` and its number or name contains ``text``", either or both."""
    conditions, params = ["true"], []
    if model is not None:
        conditions.append("models @> ARRAY[%s]::text[]")   # the form the GIN index serves
        params.append(model)
    if text:
        conditions.append("(part_number ILIKE %s OR name ILIKE %s)")
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    return " AND ".join(conditions), params


def search(conn: psycopg.Connection, *, text: str | None = None, model: str | None = None, limit: int,
           offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Catalogue rows by name, and how many match in all."""
    where, params = _matching(text, model)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM parts_catalogue WHERE {where} "
                           "ORDER BY name, part_number LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
        if not rows:
            return [], one(cur.execute(f"SELECT count(*) AS n FROM parts_catalogue WHERE {where}", params))["n"]
    count = rows[0]["total"]
    return [{k: v for k, v in row.items() if k != "total"} for row in rows], count


def parts_for_equipment(conn: psycopg.Connection, equipment_id: str, *, text: str | None,
                        limit: int) -> dict[str, Any] | None:
    """The catalogued parts that fit the machine's model and match ``text``, each with its stock in
    warehouses in all and the nearest warehouse holding it, measured from the machine's last position
    or else its site's centre. None when the machine is not registered."""
    with conn.cursor(row_factory=dict_row) as cur:
        machine = cur.execute(
            """SELECT e.model, COALESCE(st.lat, s.lat) AS lat, COALESCE(st.lon, s.lon) AS lon
               FROM equipment e LEFT JOIN equipment_state st ON st.equipment_id = e.id
               LEFT JOIN sites s ON s.name = e.site WHERE e.id = %s""", (equipment_id,)).fetchone()
        if machine is None:
            return None
        parts, count = search(conn, text=text, model=machine["model"], limit=limit)
        held = cur.execute(
            """SELECT p.part, p.quantity, w.id, w.name, w.lat, w.lon
               FROM part_stock p JOIN warehouses w ON w.id = p.place_id
               WHERE p.place_kind = 'warehouse' AND p.quantity > 0 AND p.part = ANY(%s)""",
            ([part["name"] for part in parts],)).fetchall()
    known = machine["lat"] is not None and machine["lon"] is not None
    holders: dict[str, list[dict[str, Any]]] = {}
    for row in held:
        holders.setdefault(row["part"], []).append(row)
    data = []
    for part in parts:
        places = holders.get(part["name"], [])
        nearest = None
        if places and known:
            distances = {h["id"]: distance_km(machine["lat"], machine["lon"], h["lat"], h["lon"]) for h in places}
            place = min(places, key=lambda h: (distances[h["id"]], h["id"]))
            nearest = {"warehouse_id": place["id"], "warehouse_name": place["name"], "quantity": place["quantity"],
                       "distance_km": round(distances[place["id"]], 2)}
        in_stock = sum(h["quantity"] for h in places)
        data.append({k: part[k] for k in ("part_number", "name", "description", "list_price", "currency")}
                    | {"available": in_stock > 0, "in_stock": in_stock, "nearest": nearest})
    return {"equipment_id": equipment_id, "model": machine["model"], "position_known": known,
            "data": data, "count": count}
