"""Downlink commands (tables ``commands`` and ``command_events``): their lifecycle in the database.

    queued ──► sent ──► acknowledged ──► executed
       │         │            │      └─► rejected
       └─────────┴────────────┴────────► expired (not finished before expires_at)

A state only moves forward. A controller's final answer that arrives after the command expired
(clock skew, a slow link) is still recorded, since it says what the machine really did. Every
transition is one ``command_events`` row: the audit trail of who asked what, why, and what came of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.db import one
from core.device_messages import (
    MAX_RESEND_MESSAGES,
    MAX_RESEND_RANGES,
    Command,
    check_command_params,
    check_resend_ranges,
)

COMMANDS_CHANNEL = "ironsight_commands"
OPEN_STATES = ("queued", "sent", "acknowledged")
FINAL_STATES = ("executed", "rejected", "expired")
# Commands that change what the machine may do need a stated reason, kept in the audit trail.
KINDS_NEEDING_REASON = ("lock", "unlock")
MAX_TIMEOUT_S = 7 * 86400
# Who asks for a resend of missing messages: the devices worker itself, on ingest's findings.
RESEND_REQUESTER = "devices:sequence-gaps"
# Messages asked again per sweep: the controllers answer at once, and a flood of resent messages
# would overflow the very broker queue that dropped them.
RESEND_MESSAGES_PER_SWEEP = 20_000

# Allowed transitions from a controller's answer: (answer, states it may leave).
_ANSWER_FROM = {
    "acknowledged": ("queued", "sent"),
    "executed": ("queued", "sent", "acknowledged", "expired"),
    "rejected": ("queued", "sent", "acknowledged", "expired"),
}
_ANSWER_STATE = {"received": "acknowledged", "executed": "executed", "rejected": "rejected"}

_COLUMNS = """id::text AS id, equipment_id, kind, params, state, requested_by, reason, created_at, expires_at,
              sent_at, send_count, acknowledged_at, finished_at, detail, result"""


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """What a controller's ack did: ``applied`` moved the state; otherwise ``why`` says why not."""

    applied: bool
    why: str | None = None
    kind: str | None = None


def create_command(conn: psycopg.Connection, equipment_id: str, kind: str, params: dict[str, Any], *,
                   timeout_s: float, requested_by: str | None, reason: str | None) -> dict[str, Any]:
    """Queue a command; raises ValueError for a command that cannot be sent as given, LookupError
    for an unknown machine."""
    params = check_command_params(kind, params)
    if kind in KINDS_NEEDING_REASON and not (reason and reason.strip()):
        raise ValueError(f"{kind} needs a reason")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be within 0-{MAX_TIMEOUT_S}")
    command_id = uuid.uuid4()
    # Outermost transaction: the command is committed (and NOTIFYd) before the caller answers.
    with conn.transaction():
        if conn.execute("SELECT 1 FROM equipment WHERE id = %s", (equipment_id,)).fetchone() is None:
            raise LookupError(f"no equipment {equipment_id!r}")
        conn.execute(
            """INSERT INTO commands (id, equipment_id, kind, params, requested_by, reason, expires_at)
               VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))""",
            (command_id, equipment_id, kind, Jsonb(params), requested_by, reason, timeout_s))
        _event(conn, command_id, "queued", requested_by, reason)
        conn.execute(f"NOTIFY {COMMANDS_CHANNEL}")
        return get_command(conn, str(command_id))  # type: ignore[return-value]


def get_command(conn: psycopg.Connection, command_id: str, *, with_events: bool = False) -> dict[str, Any] | None:
    try:
        uuid.UUID(command_id)
    except ValueError:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM commands WHERE id = %s", (command_id,)).fetchone()
        if row is not None and with_events:
            row["events"] = cur.execute(
                "SELECT at, state, actor, detail FROM command_events WHERE command_id = %s ORDER BY id",
                (command_id,)).fetchall()
    return row


def list_commands(conn: psycopg.Connection, equipment_id: str, *, limit: int, offset: int
                  ) -> tuple[list[dict[str, Any]], int]:
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute("SELECT count(*) AS n FROM commands WHERE equipment_id = %s",
                                (equipment_id,)))["n"]
        rows = cur.execute(f"""SELECT {_COLUMNS} FROM commands WHERE equipment_id = %s
                               ORDER BY created_at DESC, id LIMIT %s OFFSET %s""",
                           (equipment_id, limit, offset)).fetchall()
    return rows, count


def due_for_sending(conn: psycopg.Connection, limit: int = 500) -> list[tuple[str, Command]]:
    """(equipment id, command) of every valid command to publish now: queued ones for connected
    controllers, and sent but unanswered ones for controllers that reconnected since (they may have
    lost it with their session; the controller executes a repeated id once)."""
    rows = conn.execute(
        """SELECT c.equipment_id, c.id::text, c.kind, c.params, c.expires_at
           FROM commands c JOIN device_presence p ON p.equipment_id = c.equipment_id
           WHERE p.connected AND c.expires_at > now()
             AND (c.state = 'queued' OR (c.state = 'sent' AND c.sent_at < p.status_at))
           ORDER BY c.created_at LIMIT %s""", (limit,)).fetchall()
    conn.commit()
    return [(r[0], Command(r[1], r[2], r[4], r[3])) for r in rows]


def mark_sent(conn: psycopg.Connection, command_id: str) -> None:
    """The broker has the command (PUBACK). A resend keeps the state but counts."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE commands SET state = CASE WHEN state = 'queued' THEN 'sent' ELSE state END,
                      sent_at = now(), send_count = send_count + 1
               WHERE id = %s AND state IN ('queued', 'sent') RETURNING send_count""", (command_id,)).fetchone()
        if row is not None:
            _event(conn, command_id, "sent", None, f"delivery {row[0]}" if row[0] > 1 else None)


def apply_answer(conn: psycopg.Connection, equipment_id: str, command_id: str, status: str, detail: str | None,
                 result: dict[str, Any] | None) -> AnswerOutcome:
    try:
        uuid.UUID(command_id)
    except ValueError:
        return AnswerOutcome(False, "unknown_command")
    target = _ANSWER_STATE[status]
    with conn.transaction():
        row = conn.execute("SELECT equipment_id, state, kind FROM commands WHERE id = %s FOR UPDATE",
                           (command_id,)).fetchone()
        if row is None:
            return AnswerOutcome(False, "unknown_command")
        owner, state, kind = row
        if owner != equipment_id:
            return AnswerOutcome(False, "foreign_command", kind)
        if state not in _ANSWER_FROM[target]:
            return AnswerOutcome(False, "stale_ack", kind)
        timestamps = "acknowledged_at = now()" if target == "acknowledged" else (
            "finished_at = now(), acknowledged_at = coalesce(acknowledged_at, now())")
        conn.execute(f"UPDATE commands SET state = %s, {timestamps}, detail = coalesce(%s, detail), "
                     "result = coalesce(%s, result) WHERE id = %s",
                     (target, detail, Jsonb(result) if result is not None else None, command_id))
        late = " (after expiry)" if state == "expired" else ""
        _event(conn, command_id, target, equipment_id, (detail or "") + late or None)
        if target == "executed" and kind in ("lock", "unlock"):
            conn.execute("UPDATE device_presence SET locked = %s WHERE equipment_id = %s",
                         (kind == "lock", equipment_id))
    return AnswerOutcome(True, kind=kind)


def expire_overdue(conn: psycopg.Connection) -> list[str]:
    with conn.transaction():
        rows = conn.execute(
            """UPDATE commands SET state = 'expired', finished_at = now()
               WHERE state IN ('queued', 'sent', 'acknowledged') AND expires_at <= now() RETURNING id, state""",
        ).fetchall()
        for command_id, _ in rows:
            _event(conn, command_id, "expired", None, "no answer before the timeout")
    return [str(r[0]) for r in rows]


# Machines whose ingest found messages missing (equipment_sequence) for long enough, connected, with no
# resend open or recent and fewer than the allowed attempts since their oldest open gap.
_RESEND_DUE = """
SELECT s.equipment_id, s.missing, s.missing_now
FROM equipment_sequence s JOIN device_presence p USING (equipment_id)
WHERE s.missing_now > 0 AND s.missing_since < now() - make_interval(secs => %(after_s)s) AND p.connected
  AND NOT EXISTS (
      SELECT 1 FROM commands c WHERE c.equipment_id = s.equipment_id AND c.kind = 'resend'
        AND (c.state IN ('queued', 'sent', 'acknowledged')
             OR c.created_at > now() - make_interval(secs => %(retry_s)s)))
  AND (SELECT count(*) FROM commands c WHERE c.equipment_id = s.equipment_id AND c.kind = 'resend'
         AND c.created_at >= s.missing_since) < %(attempts)s
ORDER BY s.missing_since LIMIT %(limit)s
"""


def resend_ranges(missing: list[list]) -> list[list[int]]:
    """The confirmed gaps ([first, last, found_at, confirmed] as ingest keeps them) as a resend's
    ranges, the oldest first, within one command's bounds."""
    ranges: list[list[int]] = []
    total = 0
    for first, last, _, is_gap in sorted(missing):
        if not is_gap:
            continue
        if len(ranges) == MAX_RESEND_RANGES or total >= MAX_RESEND_MESSAGES:
            break
        last = min(int(last), int(first) + MAX_RESEND_MESSAGES - total - 1)
        ranges.append([int(first), last])
        total += last - int(first) + 1
    return ranges


def queue_resends(conn: psycopg.Connection, *, after_s: float, retry_s: float, attempts: int, timeout_s: float,
                  limit: int = 500, max_messages: int = RESEND_MESSAGES_PER_SWEEP) -> int:
    """Queue a ``resend`` of the missing messages for machines due one (``_RESEND_DUE``), the
    longest-waiting first, until about ``max_messages`` are asked for; how many machines."""
    with conn.transaction():
        due = conn.execute(_RESEND_DUE, {"after_s": after_s, "retry_s": retry_s, "attempts": attempts,
                                         "limit": limit}).fetchall()
        asked = 0
        for count, (equipment_id, missing, missing_now) in enumerate(due):
            if asked >= max_messages:
                due = due[:count]
                break
            asked += min(missing_now, MAX_RESEND_MESSAGES)
            command_id = uuid.uuid4()
            params = {"ranges": check_resend_ranges(resend_ranges(missing))}
            reason = f"{missing_now} messages missing"
            conn.execute(
                """INSERT INTO commands (id, equipment_id, kind, params, requested_by, reason, expires_at)
                   VALUES (%s, %s, 'resend', %s, %s, %s, now() + make_interval(secs => %s))""",
                (command_id, equipment_id, Jsonb(params), RESEND_REQUESTER, reason, timeout_s))
            _event(conn, command_id, "queued", RESEND_REQUESTER, reason)
        if due:
            conn.execute(f"NOTIFY {COMMANDS_CHANNEL}")
    return len(due)


def _event(conn: psycopg.Connection, command_id, state: str, actor: str | None, detail: str | None) -> None:
    conn.execute("INSERT INTO command_events (command_id, state, actor, detail) VALUES (%s, %s, %s, %s)",
                 (command_id, state, actor, detail))
