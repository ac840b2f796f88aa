"""``ironsight train``: fit the models on each equipment model's healthy history in the database.

Healthy means: outside every machine fault and every fault or maintenance work order (and a margin
around each) of that machine. A machine
with enough healthy history gets a model of its own (its ambient, its wear); every equipment model
gets one over all its machines, used for machines without their own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from diagnostics.models import MIN_TRAINING_SAMPLES, MODEL_SPECS, ResidualModel, fit_model

log = logging.getLogger(__name__)

# History this close to a fault may already show it developing (or recovering).
FAULT_MARGIN = timedelta(minutes=15)
# Per equipment model, at most this many machines' history is read (a random sample of them).
MAX_MACHINES_PER_MODEL = 200

_HISTORY = """
SELECT r.equipment_id, r.ts, r.engine_rpm, r.hydraulic_pressure_bar, r.speed_kmh, r.oil_temp_c, r.coolant_temp_c,
       r.ambient_temp_c
FROM readings r
WHERE r.equipment_id = ANY(%(ids)s) AND r.ts >= %(since)s AND r.ts < %(until)s
  AND NOT EXISTS (
      SELECT 1 FROM faults f
      WHERE f.equipment_id = r.equipment_id AND f.fault_code NOT IN ('SERVICE_DUE', 'OFFLINE', 'GPS_LOST',
                                                                     'GEOFENCE_EXIT', 'CURFEW_VIOLATION')
        AND r.ts >= f.started_at - %(margin)s AND r.ts <= coalesce(f.ended_at, 'infinity') + %(margin)s)
  AND NOT EXISTS (
      SELECT 1 FROM tickets t
      WHERE t.equipment_id = r.equipment_id AND t.kind IN ('fault', 'maintenance')
        AND r.ts >= t.created_at - %(margin)s
        AND r.ts <= coalesce(t.resolved_at, t.ended_at, 'infinity') + %(margin)s)
ORDER BY r.equipment_id, r.ts
"""


@dataclass(frozen=True, slots=True)
class TrainedModel:
    kind: str
    equipment_model: str
    equipment_id: str | None
    samples: int
    residual_spread: float


def train(conn: psycopg.Connection, *, since: datetime, until: datetime,
          equipment_model: str | None = None) -> list[TrainedModel]:
    machines: dict[str, list[str]] = defaultdict(list)
    query = "SELECT model, id FROM equipment" + (" WHERE model = %s" if equipment_model else "") + " ORDER BY random()"
    for model, equipment_id in conn.execute(query, (equipment_model,) if equipment_model else ()):
        if len(machines[model]) < MAX_MACHINES_PER_MODEL:
            machines[model].append(equipment_id)
    trained = []
    for model, ids in sorted(machines.items()):
        series: dict[str, list[tuple[datetime, dict[str, float | None]]]] = defaultdict(list)
        for equipment_id, ts, rpm, pressure, speed, oil, coolant, ambient in conn.execute(
                _HISTORY, {"ids": ids, "since": since, "until": until, "margin": FAULT_MARGIN}):
            series[equipment_id].append(
                (ts, {"engine_rpm": rpm, "hydraulic_pressure_bar": pressure, "speed_kmh": speed, "oil_temp_c": oil,
                      "coolant_temp_c": coolant, "ambient_temp_c": ambient}))
        for equipment_id, samples in series.items():
            if len(samples) >= 2 * MIN_TRAINING_SAMPLES:
                trained += _fit_and_store(conn, model, equipment_id, [samples], since, until)
        if series:
            trained += _fit_and_store(conn, model, None, list(series.values()), since, until)
    conn.commit()
    return trained


def _fit_and_store(conn: psycopg.Connection, equipment_model: str, equipment_id: str | None,
                   series: list[list[tuple[datetime, dict[str, float | None]]]], since: datetime,
                   until: datetime) -> list[TrainedModel]:
    trained = []
    for kind in MODEL_SPECS:
        try:
            fitted = fit_model(series, kind)
        except ValueError as exc:
            log.info("no %s model for %s: %s", kind, equipment_id or equipment_model, exc)
            continue
        store_model(conn, equipment_model, equipment_id, fitted, since, until)
        log.info("trained %s model for %s on %d samples (residual spread %.2f)", kind,
                 equipment_id or equipment_model, fitted.samples, fitted.residual_spread)
        trained.append(TrainedModel(kind, equipment_model, equipment_id, fitted.samples, fitted.residual_spread))
    return trained


def store_model(conn: psycopg.Connection, equipment_model: str, equipment_id: str | None,
                fitted: ResidualModel, since: datetime, until: datetime) -> None:
    with conn.transaction():
        conn.execute(
            """UPDATE diagnostic_models SET active = false
               WHERE kind = %s AND equipment_model = %s AND equipment_id IS NOT DISTINCT FROM %s AND active""",
            (fitted.kind, equipment_model, equipment_id))
        conn.execute(
            """INSERT INTO diagnostic_models (kind, version, equipment_model, equipment_id, window_start, window_end,
                                              samples, params)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (fitted.kind, fitted.version, equipment_model, equipment_id, since, until, fitted.samples,
             Jsonb(fitted.to_dict())))


def load_active_models(conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per machine: {kind: model}, its own model where it has one, else its equipment model's."""
    rows = conn.execute(
        """SELECT e.id, m.kind, m.params, m.equipment_id IS NOT NULL AS own
           FROM equipment e JOIN diagnostic_models m ON m.active AND m.equipment_model = e.model
                AND (m.equipment_id = e.id OR m.equipment_id IS NULL)
           WHERE e.id = ANY(%s)
           ORDER BY own""",  # the machine's own model, read last, wins
        (equipment_ids,)).fetchall()
    models: dict[str, dict[str, Any]] = defaultdict(dict)
    for equipment_id, kind, params, _ in rows:
        # A model fitted on other inputs than today's (an older version) waits for the next training.
        if kind in MODEL_SPECS and (model := ResidualModel.from_dict(params)).current():
            models[equipment_id][kind] = model
    return models
