"""Counters never run backwards: each reading's engine hours are held to the machine's known hours.

A machine's engine hours only count up, and at most as fast as time passes. Against a known point
(hours ``h`` taken at ``t``), a reading at ``ts`` is implausible when its hours are below ``h`` for
``ts >= t``, above ``h`` for ``ts < t``, or below ``h - (t - ts)`` for ``ts < t``; a jump ahead is
allowed (an hour meter can be set forward). An implausible value is not stored (the rest of the
reading is) and becomes a ``counter_implausible`` dead letter. A reading older than the machine's
newest by more than the late window is stored as backlog without its hours, so the hours and usage
already reported for a past day stay as they were.

The known points are the worker's own: loaded from ``equipment_state`` when the writer opens and
kept up with every batch it writes. Another worker's newer readings make them older, never wrong:
any accepted point is a valid bound, only a looser one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from core.telemetry import Reading

# Rounding in a controller's encoding (hours).
COUNTER_TOLERANCE_H = 0.05


@dataclass(frozen=True, slots=True)
class RefusedCounter:
    equipment_id: str
    ts: datetime
    hours: float
    known: float
    known_at: datetime


@dataclass(slots=True)
class CheckedReadings:
    readings: list[tuple[str, Reading]]
    refused: list[RefusedCounter] = field(default_factory=list)
    late: int = 0


class KnownCounters:
    def __init__(self, late_window_s: float) -> None:
        self.late_window = timedelta(seconds=late_window_s)
        # equipment id → (newest reading's ts, engine hours, when they were taken)
        self._known: dict[str, tuple[datetime, float | None, datetime | None]] = {}

    def load(self, conn: psycopg.Connection) -> None:
        self._known = {row[0]: (row[1], row[2], row[3]) for row in conn.execute(
            "SELECT equipment_id, last_ts, engine_hours, engine_hours_at FROM equipment_state")}
        conn.commit()

    def check(self, readings: list[tuple[str, Reading]]) -> CheckedReadings:
        """The readings with implausible or late engine hours taken out, and the known points moved on
        with the plausible ones (before the batch commits: a batch written again is checked against
        its own points, which it passes; one that fails for good leaves plausible points behind)."""
        checked = CheckedReadings(readings)
        known_points = self._known
        late_window = self.late_window
        tolerance = COUNTER_TOLERANCE_H
        for index, (equipment_id, reading) in enumerate(readings):
            ts, hours = reading.ts, reading.engine_hours
            known = known_points.get(equipment_id)
            if known is None:
                known_points[equipment_id] = (ts, hours, ts if hours is not None else None)
                continue
            last_ts, known_hours, known_at = known
            if hours is not None:
                refused = False
                if ts < last_ts - late_window:
                    checked.late += 1
                    refused = True
                elif known_at is not None and known_hours is not None and (
                        hours < known_hours - tolerance if ts >= known_at
                        else hours > known_hours + tolerance
                        or hours < known_hours - (known_at - ts).total_seconds() / 3600 - tolerance):
                    checked.refused.append(RefusedCounter(equipment_id, ts, hours, known_hours, known_at))
                    refused = True
                if refused:
                    if checked.readings is readings:
                        checked.readings = list(readings)
                    checked.readings[index] = (equipment_id, reading._replace(engine_hours=None))
                elif known_at is None or ts > known_at:
                    known_hours, known_at = hours, ts
            if ts > last_ts:
                last_ts = ts
            known_points[equipment_id] = (last_ts, known_hours, known_at)
        return checked
