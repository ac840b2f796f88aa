"""Loss detection from the controllers' message sequence numbers (docs/protocol.md, "seq").

Every message carries its controller's counter, one higher for each new message; a message sent
again keeps its number. The writer records, in each batch's transaction, which numbers each
machine's messages carried (``message_sequences``). The sequence job folds those records into
``equipment_sequence`` once they are ``SETTLE_S`` old — the shared subscription hands one
controller's messages to several workers, so number n + 1 may be committed a moment before n — and:

- a number above the highest seen opens a gap for the numbers skipped (``gaps``, ``missed``);
- a number inside an open gap heals it (``healed``): a late message, or one the controller sent
  again on the devices worker's ``resend`` command;
- any other number at or below the highest is a duplicate (``duplicates``);
- a number far below the highest and in no gap means the controller started counting again
  (``restarts``): what was still missing is lost, and counting begins anew; so does a jump ahead
  too large to be a gap;
- a gap still open ``GIVE_UP_S`` after it was found is lost (``lost``).

One job runs at a time (an advisory lock), whatever the number of ingest workers; it is not on the
writer's path, which only appends a row per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import metrics
from core.db import keep_running, one
from core.shards import advisory_key

log = logging.getLogger(__name__)

SETTLE_S = 10.0
FOLD_EVERY_S = 10.0
GIVE_UP_S = 3600.0
# A number this far below the highest, in no open gap, is a restarted counter, not a repeat: repeats
# are of messages a few seconds old (a lost PUBACK, a broker redelivery).
RESTART_BELOW = 1000
# A jump ahead larger than this is a counter that started again elsewhere, not that many lost messages.
MAX_GAP = 1_000_000
# Open gaps kept per machine; beyond it, the oldest are given up as lost.
MAX_OPEN_GAPS = 256
BATCH_ROWS = 200
RETRY_S = 5.0

_LOCK_KEY = advisory_key("ingest", "sequences")

Range = tuple[int, int]


def ranges_of(seqs: list[int]) -> list[tuple[int, int, int]]:
    """(first, last, messages) of consecutive runs of the sorted numbers; a repeat stays in its run."""
    out: list[tuple[int, int, int]] = []
    for seq in sorted(seqs):
        if out and seq <= out[-1][1] + 1:
            first, _, n = out[-1]
            out[-1] = (first, seq, n + 1)
        else:
            out.append((seq, seq, 1))
    return out


def _size(hole: list) -> int:
    return int(hole[1] - hole[0] + 1)


@dataclass(slots=True)
class SequenceState:
    """One machine's row of ``equipment_sequence``.

    ``missing`` holds the holes as [first, last, found_at, confirmed] lists. A hole is only a gap once
    it is still open ``confirm_s`` after it was found (``confirm``): until then it may be a message
    another worker committed a moment later, which fills it without counting anything.
    """

    high_seq: int = -1
    missing: list[list] = field(default_factory=list)
    messages: int = 0
    duplicates: int = 0
    gaps: int = 0
    missed: int = 0
    healed: int = 0
    lost: int = 0
    restarts: int = 0

    @property
    def missing_now(self) -> int:
        """Messages missing in confirmed gaps."""
        return sum(_size(h) for h in self.missing if h[3])

    @property
    def missing_since(self) -> float | None:
        return min((h[2] for h in self.missing if h[3]), default=None)

    def fold(self, runs: list[tuple[int, int, int]], now: float) -> None:
        """Take in the runs (first, last, messages) received since the last fold, in any order."""
        for first, last, count in sorted(runs):
            self.messages += count
            self.duplicates += count - (last - first + 1)  # repeats within the run
            if self.high_seq >= 0 and (last < self.high_seq - RESTART_BELOW and not self._overlaps(first, last)
                                       or first > self.high_seq + MAX_GAP):
                self._restart()
            if first <= self.high_seq:
                below = min(last, self.high_seq)
                filled_confirmed, filled = self._fill(first, below)
                self.healed += filled_confirmed
                self.duplicates += (below - first + 1) - filled
                first = below + 1
            if first > last:
                continue
            if self.high_seq >= 0 and first > self.high_seq + 1:
                self.missing.append([self.high_seq + 1, first - 1, now, False])
            self.high_seq = last
        if len(self.missing) > MAX_OPEN_GAPS:
            self.missing.sort()
            dropped = self.missing[:-MAX_OPEN_GAPS]
            self.missing = self.missing[-MAX_OPEN_GAPS:]
            self.lost += sum(_size(h) for h in dropped if h[3])

    def confirm(self, found_before: float) -> None:
        """Holes found by ``found_before`` and still open are gaps: counted missing from now on."""
        for hole in self.missing:
            if not hole[3] and hole[2] <= found_before:
                hole[3] = True
                self.gaps += 1
                self.missed += _size(hole)

    def give_up(self, older_than: float) -> int:
        """Gaps found before ``older_than`` are lost; how many messages that was."""
        lost = sum(_size(h) for h in self.missing if h[3] and h[2] < older_than)
        self.missing = [h for h in self.missing if not (h[3] and h[2] < older_than)]
        self.lost += lost
        return lost

    def _restart(self) -> None:
        self.lost += self.missing_now
        self.missing = []
        self.high_seq = -1
        self.restarts += 1

    def _overlaps(self, first: int, last: int) -> bool:
        return any(h[0] <= last and first <= h[1] for h in self.missing)

    def _fill(self, first: int, last: int) -> tuple[int, int]:
        """Remove [first, last] from the holes; how many missing messages that covered in confirmed
        gaps, and in all."""
        confirmed = filled = 0
        kept = []
        for a, b, found_at, is_gap in self.missing:
            lo, hi = max(a, first), min(b, last)
            if lo > hi:
                kept.append([a, b, found_at, is_gap])
                continue
            filled += int(hi - lo + 1)
            confirmed += int(hi - lo + 1) if is_gap else 0
            if a < lo:
                kept.append([a, lo - 1, found_at, is_gap])
            if hi < b:
                kept.append([hi + 1, b, found_at, is_gap])
        self.missing = kept
        return confirmed, filled


_STATE_COLUMNS = ("high_seq", "missing", "messages", "duplicates", "gaps", "missed", "healed", "lost",
                  "restarts")

_RUNS_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sequence_runs (
    equipment_id text NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL, messages integer NOT NULL,
    received_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""

# Settled rows, oldest first, become one run per row and machine in the transaction's temp table;
# the number of rows taken.
_TAKE_SETTLED = """
WITH taken AS (
    DELETE FROM message_sequences WHERE id IN (
        SELECT id FROM message_sequences
        WHERE received_at <= clock_timestamp() - make_interval(secs => %(settle_s)s) AND id <= %(up_to)s
        ORDER BY id LIMIT %(rows)s)
    RETURNING received_at, equipment_ids, first_seqs, last_seqs, messages
), runs AS (
    INSERT INTO sequence_runs
    SELECT u.*, taken.received_at
    FROM taken, unnest(taken.equipment_ids, taken.first_seqs, taken.last_seqs, taken.messages) u
)
SELECT count(*) FROM taken
"""

# The common case, in the database: a machine with no gap open whose new numbers follow its highest
# without a hole or a repeat only moves on. Its runs leave the temp table; the rest are folded in Python.
_ADVANCE_IN_ORDER = """
WITH per_machine AS (
    SELECT equipment_id, min(first_seq) AS first_seq, max(last_seq) AS last_seq, sum(messages) AS messages,
           bool_and(messages = last_seq - first_seq + 1 AND (previous IS NULL OR first_seq = previous + 1))
               AS in_order
    FROM (SELECT *, lag(last_seq) OVER (PARTITION BY equipment_id ORDER BY first_seq, last_seq) AS previous
          FROM sequence_runs) r
    GROUP BY equipment_id
), advanced AS (
    UPDATE equipment_sequence s SET high_seq = m.last_seq, messages = s.messages + m.messages, updated_at = now()
    FROM per_machine m
    WHERE m.equipment_id = s.equipment_id AND m.in_order AND s.missing = '[]' AND m.first_seq = s.high_seq + 1
    RETURNING s.equipment_id
), done AS (
    DELETE FROM sequence_runs r USING advanced a WHERE r.equipment_id = a.equipment_id
)
SELECT count(*) FROM advanced
"""

_SAVED_COLUMNS = ("equipment_id", *_STATE_COLUMNS, "missing_now", "missing_since")
_SAVED_TYPES = ("text", "int8", "jsonb", "int8", "int8", "int8", "int8", "int8", "int8", "int4", "int8",
                "timestamptz")
_STATES_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sequence_states (LIKE equipment_sequence INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
_SAVE = f"""
INSERT INTO equipment_sequence AS s ({", ".join(_SAVED_COLUMNS)}, updated_at)
SELECT {", ".join(_SAVED_COLUMNS)}, now() FROM sequence_states
ON CONFLICT (equipment_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _SAVED_COLUMNS[1:])}, updated_at = now()
"""

# Machines whose runs leave a hole but arrived within the last ``hold_s`` go back to
# message_sequences once: the message in the hole is, nearly always, in a batch another worker
# committed just after the cut, and next time the machine moves on in order in the database.
_HOLD_BACK = """
WITH young AS (
    SELECT equipment_id FROM sequence_runs GROUP BY equipment_id
    HAVING min(received_at) > clock_timestamp() - make_interval(secs => %s)
), back AS (
    DELETE FROM sequence_runs r USING young y WHERE r.equipment_id = y.equipment_id RETURNING r.*
)
INSERT INTO message_sequences (received_at, equipment_ids, first_seqs, last_seqs, messages)
SELECT min(received_at), array_agg(equipment_id), array_agg(first_seq), array_agg(last_seq), array_agg(messages)
FROM back HAVING count(*) > 0
"""


@dataclass(slots=True)
class FoldResult:
    machines: int = 0
    gaps: int = 0
    missed: int = 0
    healed: int = 0
    duplicates: int = 0
    lost: int = 0
    restarts: int = 0

    def add(self, before: SequenceState, after: SequenceState) -> None:
        self.gaps += after.gaps - before.gaps
        self.missed += after.missed - before.missed
        self.healed += after.healed - before.healed
        self.duplicates += after.duplicates - before.duplicates
        self.lost += after.lost - before.lost
        self.restarts += after.restarts - before.restarts


def fold_settled(conn: psycopg.Connection, *, settle_s: float = SETTLE_S, give_up_s: float = GIVE_UP_S,
                 batch_rows: int = BATCH_ROWS, stop: threading.Event | None = None) -> FoldResult:
    """Fold every settled ``message_sequences`` row into ``equipment_sequence`` and give up gaps older
    than ``give_up_s``. Returns at once (with nothing done) while another worker's job runs."""
    total = FoldResult()
    # Rows written after this (held back ones too) wait for the next fold.
    up_to = one(conn.execute("SELECT coalesce(max(id), 0) FROM message_sequences"))[0]
    conn.commit()
    while stop is None or not stop.is_set():
        with conn.transaction():
            if not one(conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)))[0]:
                return total
            # A fold joins thousands of machines at once, but the temp table has no statistics and a young
            # equipment_sequence few: left alone, the planner picks a nested loop (seconds, not milliseconds).
            conn.execute("SET LOCAL enable_nestloop = off")
            conn.execute("SET LOCAL work_mem = '64MB'")
            conn.execute(_RUNS_TABLE)
            taken = one(conn.execute(_TAKE_SETTLED, {"settle_s": settle_s, "up_to": up_to, "rows": batch_rows}))[0]
            total.machines += one(conn.execute(_ADVANCE_IN_ORDER))[0]
            conn.execute(_HOLD_BACK, (2 * settle_s,))
            runs: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
            for equipment_id, first, last, count in conn.execute(
                    "SELECT equipment_id, first_seq, last_seq, messages FROM sequence_runs"):
                runs[equipment_id].append((first, last, count))
            now = time.time()
            states = _load(conn, list(runs))
            changed: dict[str, SequenceState] = {}
            for equipment_id, machine_runs in runs.items():
                state = states.get(equipment_id) or SequenceState()
                before = _copy(state)
                state.fold(machine_runs, now)
                state.confirm(now - settle_s)
                total.add(before, state)
                changed[equipment_id] = state
            # Holes to confirm and gaps past their time, of machines that sent nothing this round too.
            waiting = [i for i in _with_holes_to_review(conn, settle_s, give_up_s) if i not in changed]
            for equipment_id, state in _load(conn, waiting).items():
                before = _copy(state)
                state.confirm(now - settle_s)
                state.give_up(now - give_up_s)
                total.add(before, state)
                changed[equipment_id] = state
            if changed:
                _save(conn, changed)
            total.machines += len(runs)
        if taken < batch_rows:
            break
    return total


def _copy(state: SequenceState) -> SequenceState:
    return SequenceState(state.high_seq, [list(h) for h in state.missing], state.messages,
                         state.duplicates, state.gaps, state.missed, state.healed, state.lost, state.restarts)


def _load(conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, SequenceState]:
    if not equipment_ids:
        return {}
    rows = conn.execute(f"SELECT equipment_id, {', '.join(_STATE_COLUMNS)} FROM equipment_sequence "
                        "WHERE equipment_id = ANY(%s)", (equipment_ids,)).fetchall()
    return {row[0]: SequenceState(*row[1:]) for row in rows}


def _with_holes_to_review(conn: psycopg.Connection, settle_s: float, give_up_s: float) -> list[str]:
    """Machines not folded for a while with holes still unconfirmed, and those with gaps to give up."""
    return [row[0] for row in conn.execute(
        """SELECT equipment_id FROM equipment_sequence
           WHERE missing <> '[]' AND (updated_at < now() - make_interval(secs => %s)
                                      OR missing_since < now() - make_interval(secs => %s))
           LIMIT 1000""", (settle_s, give_up_s))]


def _save(conn: psycopg.Connection, states: dict[str, SequenceState]) -> None:
    conn.execute(_STATES_TABLE)
    with conn.cursor() as cur, cur.copy(
            f"COPY sequence_states ({', '.join(_SAVED_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_SAVED_TYPES)
        for equipment_id, s in states.items():
            since = s.missing_since
            copy.write_row((equipment_id, s.high_seq, Jsonb(s.missing), s.messages, s.duplicates, s.gaps, s.missed,
                            s.healed, s.lost, s.restarts, s.missing_now,
                            None if since is None else _timestamp(since)))
    conn.execute(_SAVE)


def _timestamp(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class SequenceJob:
    """``fold_settled`` every ``every_s`` on a connection of its own, until ``stop``."""

    def __init__(self, database_url: str, *, name: str, every_s: float = FOLD_EVERY_S, settle_s: float = SETTLE_S,
                 give_up_s: float = GIVE_UP_S) -> None:
        self.database_url = database_url
        self.name = name
        self.every_s = every_s
        self.settle_s = settle_s
        self.give_up_s = give_up_s
        self.metrics = metrics.SequenceMetrics(name)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"{self.name} sequences", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        keep_running(lambda conn: self._fold(conn, stop), database_url=self.database_url, every_s=self.every_s,
                     stop=stop, what=f"ingest {self.name}: the sequence job", application_name="ironsight-sequences",
                     retry_s=RETRY_S)

    def _fold(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        result = fold_settled(conn, settle_s=self.settle_s, give_up_s=self.give_up_s, stop=stop)
        self.metrics.folded(result)
        if result.missed or result.lost or result.restarts:
            log.warning("ingest %s: %d messages missing in %d new gaps, %d healed, %d lost, %d restarts",
                        self.name, result.missed, result.gaps, result.healed, result.lost, result.restarts)


# --- what dispatchers read ---

_PUBLIC_COLUMNS = """s.equipment_id, s.high_seq, s.messages, s.duplicates, s.gaps, s.missed, s.healed,
    s.lost, s.restarts, s.missing_now, s.missing_since, s.missing, s.updated_at"""


def _public(row: dict) -> dict:
    row["missing"] = [{"first": int(a), "last": int(b), "detected_at": _timestamp(t)}
                      for a, b, t, is_gap in row["missing"] if is_gap]
    return row


def machine_sequence(conn: psycopg.Connection, equipment_id: str) -> dict | None:
    """One machine's sequence record (None before its first settled message)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_PUBLIC_COLUMNS} FROM equipment_sequence s WHERE s.equipment_id = %s",
                          (equipment_id,)).fetchone()
    return None if row is None else _public(row)


def machines_missing_messages(conn: psycopg.Connection, *, customer: str | None, limit: int, offset: int
                              ) -> tuple[list[dict], int]:
    """Machines with messages still missing, the longest-waiting first."""
    where = "s.missing_now > 0"
    if customer is not None:
        where += " AND s.equipment_id IN (SELECT id FROM equipment WHERE customer = %(customer)s)"
    params = {"customer": customer, "limit": limit, "offset": offset}
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM equipment_sequence s WHERE {where}", params))["n"]
        rows = cur.execute(f"""SELECT {_PUBLIC_COLUMNS} FROM equipment_sequence s WHERE {where}
                               ORDER BY s.missing_since, s.equipment_id LIMIT %(limit)s OFFSET %(offset)s""",
                           params).fetchall()
    return [_public(r) for r in rows], count
