"""Complaints that close the loop.

A complaint (a low callback score, or raised directly) goes to the responsible department with
``ANSWER_WITHIN`` (a week) to answer; the SLA scheduler warns when ``WARN_FRACTION`` of that time has
passed and records a breach after it, once per round. The department records its answer, which
schedules a checking callback (tickets.callbacks). A satisfied customer closes the complaint and the
ticket; an unhappy one sends it back: a new round, to the same department or another, with a new
week. After ``MAX_ROUNDS`` rounds, or when the customer cannot be reached for the check, it goes to
management, who close it with a note. Every round is kept in ``complaint_rounds``; every step is a
ticket event.

This module keeps the complaint records; the ticket transitions that go with them are
tickets.aftercare's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core.errors import IronSightError
from notifications import notify
from tickets import callbacks, groups

ANSWER_WITHIN = timedelta(days=7)
# complaints.state, as the schema's CHECK lists them.
STATES = ("with_department", "answered", "escalated", "satisfied", "closed")
# Sent back this many times without satisfying the customer, a complaint goes to management.
MAX_ROUNDS = 3
OPEN_STATES = ("with_department", "answered", "escalated")

_COLUMNS = ("id, ticket_id, source, indicators, description, state, department, round, answer_due, opened_by, "
            "opened_at, closed_at, closing_note")
_LISTED = (", ".join("c." + column.strip() for column in _COLUMNS.split(","))
           + ", t.equipment_id, e.customer AS customer_id")


class ComplaintNotFound(IronSightError):
    pass


class ComplaintStateError(IronSightError):
    """The step does not fit the complaint's state (HTTP 409)."""


def _event(cur: psycopg.Cursor[Any], ticket_id: int, at: datetime, actor: str, event: str,
           detail: dict[str, Any]) -> None:
    cur.execute("INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, %s, %s)",
                (ticket_id, at, actor, event, Jsonb(detail)))


def open_complaint(cur: psycopg.Cursor[DictRow], ticket_id: int, *, department: str, source: str, actor: str,
                   at: datetime, indicators: list[str] | None = None, description: str = "") -> dict[str, Any]:
    """Open a complaint about the ticket and send it to ``department`` (a department group); raises
    ComplaintStateError when the ticket has an open complaint already. The caller's ticket event
    says so (``summary``)."""
    groups.require(cur, department, "department")
    if cur.execute("SELECT 1 FROM complaints WHERE ticket_id = %s AND closed_at IS NULL", (ticket_id,)).fetchone():
        raise ComplaintStateError(f"ticket {ticket_id} has an open complaint")
    complaint = cur.execute(
        f"""INSERT INTO complaints (ticket_id, source, indicators, description, department, answer_due, opened_by,
                                   opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
        (ticket_id, source, indicators or [], description, department, at + ANSWER_WITHIN, actor, at)).fetchone()
    assert complaint is not None
    _send(cur, complaint, department, 1, at)
    return complaint


def _send(cur: psycopg.Cursor[DictRow], complaint: dict[str, Any], department: str, round_: int,
          at: datetime) -> None:
    cur.execute("INSERT INTO complaint_rounds (complaint_id, round, department, sent_at, answer_due) "
                "VALUES (%s, %s, %s, %s, %s)", (complaint["id"], round_, department, at, at + ANSWER_WITHIN))
    notify(cur, "complaint_assigned", ticket_id=complaint["ticket_id"], at=at, group=department,
           facts={"department": department, "round": round_, "answer_due": at + ANSWER_WITHIN})


def summary(complaint: dict[str, Any]) -> dict[str, Any]:
    """What a ticket event says of a complaint just opened."""
    return {"complaint_id": complaint["id"], "department": complaint["department"],
            "answer_due": complaint["answer_due"].isoformat()}


def lock(cur: psycopg.Cursor[DictRow], complaint_id: int) -> dict[str, Any]:
    row = cur.execute(f"SELECT {_COLUMNS} FROM complaints WHERE id = %s FOR UPDATE", (complaint_id,)).fetchone()
    if row is None:
        raise ComplaintNotFound(f"no complaint {complaint_id}")
    return row


def answer(cur: psycopg.Cursor[DictRow], complaint: dict[str, Any], *, answer_text: str, actor: str,
           at: datetime, ticket: dict[str, Any], callback_within: timedelta) -> int | None:
    """The department's answer to the current round; schedules the checking callback (its id)."""
    if complaint["state"] != "with_department":
        raise ComplaintStateError(f"complaint {complaint['id']} is {complaint['state']}, not with a department")
    cur.execute("UPDATE complaint_rounds SET answer = %s, answered_by = %s, answered_at = %s "
                "WHERE complaint_id = %s AND round = %s", (answer_text, actor, at, complaint["id"], complaint["round"]))
    cur.execute("UPDATE complaints SET state = 'answered' WHERE id = %s", (complaint["id"],))
    check = callbacks.schedule(cur, ticket, "complaint_check", at, within=callback_within,
                               complaint_id=complaint["id"], complaint_round=complaint["round"])
    _event(cur, complaint["ticket_id"], at, actor, "complaint_answered",
           {"complaint_id": complaint["id"], "round": complaint["round"], "department": complaint["department"],
            "answer": answer_text, "on_time": at <= complaint["answer_due"], **(check or {})})
    return None if check is None else check["callback_id"]


def verify(cur: psycopg.Cursor[DictRow], complaint: dict[str, Any], *, satisfied: bool, actor: str, at: datetime,
           note: str, department: str | None = None) -> str:
    """What the checking callback heard. Satisfied: the complaint is ``satisfied`` and closed. Not:
    sent back for another round (to ``department`` when given), or to management after ``MAX_ROUNDS``.
    Returns the complaint's new state."""
    if complaint["state"] != "answered":
        raise ComplaintStateError(f"complaint {complaint['id']} is {complaint['state']}, not answered")
    cur.execute("UPDATE complaint_rounds SET satisfied = %s, verified_by = %s, verified_at = %s, verify_note = %s "
                "WHERE complaint_id = %s AND round = %s",
                (satisfied, actor, at, note, complaint["id"], complaint["round"]))
    if satisfied:
        cur.execute("UPDATE complaints SET state = 'satisfied', closed_at = %s, closing_note = %s WHERE id = %s",
                    (at, note, complaint["id"]))
        _event(cur, complaint["ticket_id"], at, actor, "complaint_satisfied",
               {"complaint_id": complaint["id"], "round": complaint["round"], "note": note})
        return "satisfied"
    if complaint["round"] >= MAX_ROUNDS:
        escalate(cur, complaint, at=at, actor=actor,
                 reason=f"the customer is still not satisfied after {complaint['round']} rounds")
        return "escalated"
    target = department or complaint["department"]
    groups.require(cur, target, "department")
    next_round = complaint["round"] + 1
    cur.execute("UPDATE complaints SET state = 'with_department', round = %s, department = %s, answer_due = %s "
                "WHERE id = %s", (next_round, target, at + ANSWER_WITHIN, complaint["id"]))
    _event(cur, complaint["ticket_id"], at, actor, "complaint_sent_back",
           {"complaint_id": complaint["id"], "round": next_round, "department": target, "note": note,
            "answer_due": (at + ANSWER_WITHIN).isoformat()})
    _send(cur, complaint, target, next_round, at)
    return "with_department"


def escalate(cur: psycopg.Cursor[DictRow], complaint: dict[str, Any], *, at: datetime, actor: str,
             reason: str) -> None:
    cur.execute("UPDATE complaints SET state = 'escalated' WHERE id = %s", (complaint["id"],))
    notify(cur, "complaint_escalated", ticket_id=complaint["ticket_id"], at=at, group=groups.MANAGEMENT,
           facts={"department": complaint["department"], "round": complaint["round"], "reason": reason})
    _event(cur, complaint["ticket_id"], at, actor, "complaint_escalated",
           {"complaint_id": complaint["id"], "round": complaint["round"], "to": groups.MANAGEMENT,
            "reason": reason})


def close(cur: psycopg.Cursor[DictRow], complaint: dict[str, Any], *, note: str, actor: str, at: datetime) -> None:
    """Management closes an escalated complaint."""
    if complaint["state"] != "escalated":
        raise ComplaintStateError(f"complaint {complaint['id']} is {complaint['state']}; management closes "
                                  "escalated complaints")
    cur.execute("UPDATE complaints SET state = 'closed', closed_at = %s, closing_note = %s WHERE id = %s",
                (at, note, complaint["id"]))
    _event(cur, complaint["ticket_id"], at, actor, "complaint_closed",
           {"complaint_id": complaint["id"], "round": complaint["round"], "note": note})


def get_complaint(conn: psycopg.Connection, complaint_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_LISTED} FROM complaints c JOIN tickets t ON t.id = c.ticket_id "
            "JOIN equipment e ON e.id = t.equipment_id WHERE c.id = %s", (complaint_id,)).fetchone()
        if row is not None:
            row["rounds"] = cur.execute(
                "SELECT round, department, sent_at, answer_due, answer, answered_by, answered_at, satisfied, "
                "verified_by, verified_at, verify_note, warned_at, breached_at FROM complaint_rounds "
                "WHERE complaint_id = %s ORDER BY round", (complaint_id,)).fetchall()
        return row


def list_complaints(conn: psycopg.Connection, *, now: datetime, state: str | None = None,
                    department: str | None = None, open_only: bool = False, overdue: bool = False,
                    customer: str | None = None, limit: int = 100,
                    offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complaints, the nearest deadline first; ``overdue``: with a department past its answer deadline."""
    where = """ WHERE (%(state)s::text IS NULL OR c.state = %(state)s)
                  AND (%(department)s::text IS NULL OR c.department = %(department)s)
                  AND (NOT %(open_only)s OR c.closed_at IS NULL)
                  AND (NOT %(overdue)s OR (c.state = 'with_department' AND c.answer_due < %(now)s))
                  AND (%(customer)s::text IS NULL OR e.customer = %(customer)s)"""
    params = {"state": state, "department": department, "open_only": open_only, "overdue": overdue, "now": now,
              "customer": customer, "limit": limit, "offset": offset}
    source = " FROM complaints c JOIN tickets t ON t.id = c.ticket_id JOIN equipment e ON e.id = t.equipment_id"
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute("SELECT count(*) AS n" + source + where, params).fetchone()
        rows = cur.execute(
            f"SELECT {_LISTED}" + source + where
            + " ORDER BY c.closed_at IS NOT NULL, c.answer_due, c.id LIMIT %(limit)s OFFSET %(offset)s",
            params).fetchall()
    for row in rows:
        row["overdue"] = row["state"] == "with_department" and row["answer_due"] < now
    return rows, count["n"] if count else 0


_FIRE = """
WITH hits AS (
    SELECT r.complaint_id, r.round FROM complaint_rounds r JOIN complaints c ON c.id = r.complaint_id
    WHERE c.state = 'with_department' AND c.round = r.round AND r.answered_at IS NULL AND r.{column} IS NULL
      AND {condition}
    FOR UPDATE OF r SKIP LOCKED
), fired AS (
    UPDATE complaint_rounds r SET {column} = %(now)s FROM hits
    WHERE (r.complaint_id, r.round) = (hits.complaint_id, hits.round) AND r.{column} IS NULL
    RETURNING r.complaint_id, r.round, r.department, r.answer_due
)
INSERT INTO ticket_events (ticket_id, at, actor, event, detail)
SELECT c.ticket_id, %(now)s, 'sla', %(event)s,
       jsonb_build_object('timer', 'complaint_answer', 'complaint_id', f.complaint_id, 'round', f.round,
                          'department', f.department, 'due', f.answer_due)
FROM fired f JOIN complaints c ON c.id = f.complaint_id
RETURNING ticket_id, (detail ->> 'complaint_id')::bigint, detail ->> 'department', (detail ->> 'round')::int,
          (detail ->> 'due')::timestamptz
"""
_WARNING = "%(now)s >= r.sent_at + (r.answer_due - r.sent_at) * %(fraction)s AND %(now)s < r.answer_due"
_BREACH = "%(now)s >= r.answer_due"


def fire_sla(cur: psycopg.Cursor[Any], now: datetime,
             warn_fraction: float) -> dict[str, list[tuple[int, int, str]]]:
    """Warnings and breaches of department answers due at ``now``: kind → [(ticket, complaint,
    department)], each once per round."""
    fired: dict[str, list[tuple[int, int, str]]] = {}
    for kind, column, condition in (("breach", "breached_at", _BREACH), ("warning", "warned_at", _WARNING)):
        rows = cur.execute(_FIRE.format(column=column, condition=condition),
                           {"now": now, "fraction": warn_fraction, "event": f"sla_{kind}"}).fetchall()
        fired[kind] = [tuple(r.values())[:3] if isinstance(r, dict) else tuple(r)[:3] for r in rows]
        if kind == "warning":
            for row in rows:
                ticket_id, _, department, round_, due = row.values() if isinstance(row, dict) else row
                notify(cur, "complaint_deadline_near", ticket_id=ticket_id, at=now, group=department,
                       facts={"department": department, "round": round_, "answer_due": due})
    return fired
