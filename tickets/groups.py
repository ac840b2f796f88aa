"""Service groups: the expert groups a hard case is escalated to, the departments complaints go to,
management, and the call centre; each with members who are told (notifications) what needs them."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from core.errors import IronSightError

GROUP_KINDS = ("expert", "department", "management", "call_centre")
# Who is told when a complaint is sent back too often, and whose queue callbacks are in.
MANAGEMENT = "management"
CALL_CENTRE = "call centre"

_MEMBER_COLUMNS = ("member", "name", "email", "phone", "language", "preferred_channel", "skills")


class UnknownGroup(IronSightError):
    """No group of that name (and kind)."""


def require(cur: psycopg.Cursor[Any], name: str, *kinds: str) -> None:
    """Raise UnknownGroup unless ``name`` is a group of one of ``kinds``."""
    row = cur.execute("SELECT kind FROM service_groups WHERE name = %s", (name,)).fetchone()
    kind = None if row is None else (row["kind"] if isinstance(row, dict) else row[0])
    if kind is None or (kinds and kind not in kinds):
        raise UnknownGroup(f"no {' or '.join(kinds) or 'service'} group {name!r}")


def _with_members(cur: psycopg.Cursor[DictRow], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    members: dict[str, list[dict[str, Any]]] = {}
    for row in cur.execute(f"SELECT group_name, {', '.join(_MEMBER_COLUMNS)} FROM service_group_members "
                           "WHERE group_name = ANY(%s) ORDER BY group_name, member",
                           ([g["name"] for g in groups],)):
        members.setdefault(row.pop("group_name"), []).append(row)
    for group in groups:
        group["members"] = members.get(group["name"], [])
    return groups


def list_groups(conn: psycopg.Connection, kind: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM service_groups WHERE %(kind)s::text IS NULL OR kind = %(kind)s "
                           "ORDER BY kind, name", {"kind": kind}).fetchall()
        return _with_members(cur, rows)


def get_group(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM service_groups WHERE name = %s", (name,)).fetchone()
        return None if row is None else _with_members(cur, [row])[0]


def put_group(conn: psycopg.Connection, name: str, *, kind: str, description: str, skills: list[str],
              webhook_url: str | None, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Create or replace a group with its members."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """INSERT INTO service_groups (name, kind, description, skills, webhook_url) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, description = EXCLUDED.description,
                   skills = EXCLUDED.skills, webhook_url = EXCLUDED.webhook_url, updated_at = now()""",
            (name, kind, description, skills, webhook_url))
        cur.execute("DELETE FROM service_group_members WHERE group_name = %s", (name,))
        for member in members:
            cur.execute(
                f"INSERT INTO service_group_members (group_name, {', '.join(_MEMBER_COLUMNS)}) "
                f"VALUES (%s, {', '.join(['%s'] * len(_MEMBER_COLUMNS))})",
                (name, *(member.get(column) for column in _MEMBER_COLUMNS)))
    group = get_group(conn, name)
    assert group is not None
    return group


def delete_group(conn: psycopg.Connection, name: str) -> bool:
    """Delete a group nobody refers to; raises psycopg.errors.ForeignKeyViolation otherwise."""
    with conn.transaction():
        return conn.execute("DELETE FROM service_groups WHERE name = %s", (name,)).rowcount > 0
