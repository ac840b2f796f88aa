"""The rule limits the dashboards draw, per equipment model.

The rules engine (diagnostics.rulebook) owns these numbers; the dashboards may not import it, so
they are repeated here and a test fails when the two disagree. In SQL, a limit is a CASE over the
machine's model, so that every machine shows its own model's line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Limits:
    oil_temp_c: float = 105.0  # OIL_OVERHEAT raises above
    coolant_temp_c: float = 105.0  # COOLANT_OVERHEAT raises above
    hydraulic_pressure_low_bar: float = 170.0  # HYDRAULIC_PRESSURE_LOW raises below, while working
    hydraulic_pressure_spike_bar: float = 380.0  # HYDRAULIC_PRESSURE_SPIKES counts peaks above


DEFAULT = Limits()
BY_MODEL: dict[str, Limits] = {
    "EX350": Limits(oil_temp_c=108.0),
    "CP42": Limits(hydraulic_pressure_spike_bar=420.0),
}

# ServiceDue: a service every SERVICE_INTERVAL_H engine hours, warned SERVICE_WARN_BEFORE_H ahead.
SERVICE_INTERVAL_H = 250.0
SERVICE_WARN_BEFORE_H = 10.0

LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def limit_sql(name: str, model_column: str) -> str:
    """``CASE <model> WHEN 'EX350' THEN 108.0 … ELSE <default> END`` for the limit ``name``."""
    if name not in LIMIT_NAMES:
        raise KeyError(name)
    default = getattr(DEFAULT, name)
    cases = " ".join(f"WHEN '{model}' THEN {getattr(limits, name)!r}"
                     for model, limits in sorted(BY_MODEL.items()) if getattr(limits, name) != default)
    if not cases:
        return repr(default)
    return f"CASE {model_column} {cases} ELSE {default!r} END"


def next_service_sql(hours: str, last_service_hours: str) -> str:
    """Engine hours at which the next service is due, as the ServiceDue rule computes it.

    Without a recorded service the rule counts from the interval boundary below the hours it first
    saw; here the boundary below the current hours stands in for it.
    """
    interval, warn = SERVICE_INTERVAL_H, SERVICE_WARN_BEFORE_H
    serviced = f"coalesce({last_service_hours}, floor({hours} / {interval!r}) * {interval!r})"
    return f"((floor(({serviced} + {warn!r}) / {interval!r}) + 1) * {interval!r})"
