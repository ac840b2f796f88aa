"""Season benchmark: models trained in one season, scored through the next, on the drifting simulator.

Each machine (device_sim, with its own cooling, pump and sensor traits, drifting sensors and weekly
duty mix) works ``--train-days`` spring days; its oil-temperature model is fitted on them as
``ironsight train`` fits it (diagnostics.models.fit_model, one series per day). Then:

- healthy machines work ``--score-days`` summer days spread over ``--score-span-days`` and are
  diagnosed by the real engine (diagnostics.engine.EquipmentEngine, production rulebook) with that
  spring model, one engine per machine through the summer as a worker keeps it: every fault raised
  is a false alarm, per 1,000 machine-hours;
- faulty machines work a healthy summer day, then one on which a cooling or hydraulic fault starts
  and develops over ``--ramp-h`` hours (a radiator clogging, a pump wearing). Per fault kind: whether it was detected,
  the first warning of a learned model (a rule that judges by a trained model), the first alarm of
  any other rule, the model's lead over the rules, and the top-1 cause of the first expected fault
  (raised by the model or a rule) and of the first expected fault a rule raised.

The air temperature of the training and scoring days is reported: the swing between them is what
the models must hold through. Last line: one JSON object with the figures and the settings.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import SERVICE_INTERVAL_H, _values  # noqa: E402

from device_sim.faults import INJECTABLE_FAULTS  # noqa: E402
from device_sim.machine import MachineSpec, SimulatedMachine  # noqa: E402
from device_sim.simulated_fleet import SITES_BY_NAME, build_fleet  # noqa: E402
from diagnostics.engine import EquipmentEngine  # noqa: E402
from diagnostics.models import ResidualModel, fit_models  # noqa: E402
from diagnostics.rulebook import rulebook_for  # noqa: E402
from diagnostics.rules import EquipmentContext, ModelResidual, Sample, Site  # noqa: E402

TRAIN_START = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
SCORE_START = datetime(2026, 6, 22, 5, 0, tzinfo=UTC)
FAULT_KINDS = ("radiator_clogged", "oil_cooler_clogged", "low_coolant", "hydraulic_pump_wear", "hydraulic_leak")
# Codes raised by rules that judge against a learned model rather than a fixed limit.
MODEL_CODES = frozenset(rule.fault_code for model in ("EX210", "EX350", "TC500", "CP42")
                        for rule in rulebook_for(model).rules if isinstance(rule, ModelResidual))


@dataclass
class Day:
    readings: list[tuple[datetime, dict]] = field(default_factory=list)
    air_min: float = float("inf")
    air_max: float = float("-inf")
    engine_hours: float = 0.0  # at the end of the day


def work_day(spec: MachineSpec, start: datetime, hours: float, step_s: float, seed: int,
             engine_hours: float | None = None) -> Day:
    """A working day; ``engine_hours``: where the previous day ended (the meter never runs back)."""
    machine = SimulatedMachine(spec, start, seed=seed)
    # Clear of a service boundary: a due service's reminder is real, not a false alarm.
    machine.engine_hours = engine_hours or (
        math.floor(machine.engine_hours / SERVICE_INTERVAL_H) * SERVICE_INTERVAL_H + 50.0)
    day = Day()
    t = 0.0
    while t < hours * 3600:
        t += step_s
        machine.advance(step_s)
        reading = machine.reading(start + timedelta(seconds=t))
        values = _values(reading)
        day.readings.append((reading.ts, values))
        air = values.get("ambient_temp_c")
        if air is not None:
            day.air_min, day.air_max = min(day.air_min, air), max(day.air_max, air)
    day.engine_hours = machine.engine_hours
    return day


def context(spec: MachineSpec, models: dict[str, ResidualModel]) -> EquipmentContext:
    site = SITES_BY_NAME[spec.site]
    return EquipmentContext(spec.equipment_id, spec.model, Site(site.lat, site.lon, site.radius_m, site.timezone),
                            models=models)


def train(spec: MachineSpec, args: argparse.Namespace, seed: int) -> tuple[dict[str, ResidualModel], list[Day]]:
    """The machine's spring, healthy (a fault to come is not in its history)."""
    spec = replace(spec, fault=None, fault_after_s=None, fault_ramp_s=None)
    days = [work_day(spec, args.train_start + timedelta(days=d), args.hours, args.train_step, seed + d)
            for d in range(args.train_days)]
    return fit_models([day.readings for day in days]), days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=20, help="healthy machines")
    parser.add_argument("--per-fault", type=int, default=4, help="machines per fault kind")
    parser.add_argument("--train-start", type=datetime.fromisoformat, default=TRAIN_START)
    parser.add_argument("--train-days", type=int, default=3)
    parser.add_argument("--score-start", type=datetime.fromisoformat, default=SCORE_START)
    parser.add_argument("--score-days", type=int, default=5, help="summer days scored per healthy machine")
    parser.add_argument("--score-span-days", type=int, default=50, help="the scored days spread over this span")
    parser.add_argument("--hours", type=float, default=10.0, help="working hours a day")
    parser.add_argument("--train-step", type=float, default=5.0, help="seconds between training readings")
    parser.add_argument("--step", type=float, default=5.0, help="seconds between scored readings")
    parser.add_argument("--ramp-h", type=float, default=3.0, help="hours a fault takes to develop fully")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    started = time.monotonic()
    rng = random.Random(args.seed)
    air_train: list[float] = []
    air_score: list[float] = []
    false_alarms: dict[str, int] = {}
    hours_scored = 0.0
    for i, spec in enumerate(build_fleet(args.healthy, fault_share=0.0, seed=args.seed, id_prefix="S")):
        model, days = train(spec, args, args.seed * 1000 + 100 * i)
        air_train += [d.air_min for d in days] + [d.air_max for d in days]
        # One engine through the summer, as a diagnostics worker keeps a machine's state between days.
        engine = EquipmentEngine(rulebook_for(spec.model), context(spec, model))
        hours: float | None = None
        for d in range(args.score_days):
            offset = round(d * args.score_span_days / max(1, args.score_days))
            day = work_day(spec, args.score_start + timedelta(days=offset), args.hours, args.step,
                           args.seed * 1000 + 100 * i + 50 + d, engine_hours=hours)
            hours = day.engine_hours
            air_score += [day.air_min, day.air_max]
            for ts, values in day.readings:
                for change in engine.feed(Sample(ts, values)):
                    if change.kind == "raised":
                        false_alarms[change.fault_code] = false_alarms.get(change.fault_code, 0) + 1
                        print(f"    false alarm: {spec.equipment_id} {change.fault_code} at {change.at:%Y-%m-%d %H:%M} "
                              f"{change.evidence}")
            hours_scored += args.hours

    per_fault: dict[str, dict] = {}
    leads: list[float] = []
    detected = machines = top1 = top1_at_rule = top1_at_model = 0
    for kind in FAULT_KINDS:
        injected = INJECTABLE_FAULTS[kind]
        results = []
        specs = build_fleet(args.per_fault, fault_share=1.0, seed=args.seed + 1, id_prefix=f"F-{kind}",
                            faults=(kind,))
        for i, spec in enumerate(specs):
            onset_s = rng.uniform(1.0, 2.0) * 3600
            spec = replace(spec, fault_after_s=onset_s, fault_ramp_s=args.ramp_h * 3600)
            model, _ = train(spec, args, args.seed * 2000 + 100 * i)
            start = args.score_start + timedelta(days=1 + rng.randrange(args.score_span_days))
            engine = EquipmentEngine(rulebook_for(spec.model), context(spec, model))
            # The engine has followed the machine the healthy day before, as a worker would have.
            before = work_day(replace(spec, fault=None, fault_after_s=None, fault_ramp_s=None),
                              start - timedelta(days=1), args.hours, args.step, args.seed * 2000 + 100 * i + 49)
            for ts, values in before.readings:
                engine.feed(Sample(ts, values))
            day = work_day(spec, start, args.hours, args.step, args.seed * 2000 + 100 * i + 50,
                           engine_hours=before.engine_hours)
            onset = start + timedelta(seconds=onset_s)
            first_model = first_rule = first_expected = None
            cause = rule_cause = model_cause = model_code = None
            model_evidence: dict = {}
            for ts, values in day.readings:
                for change in engine.feed(Sample(ts, values)):
                    if change.kind != "raised" or ts < onset:
                        continue
                    after = (ts - onset).total_seconds()
                    causes = change.diagnosis["causes"] if change.diagnosis else []
                    top = causes[0]["id"] if causes else None
                    if change.fault_code in MODEL_CODES:
                        if first_model is None:
                            first_model, model_cause, model_code = after, top, change.fault_code
                            model_evidence = {k: v for k, v in (change.diagnosis or {}).get("evidence", {}).items()
                                              if k.endswith(("deviation_sigmas", "jitter_ratio"))}
                    else:
                        first_rule = after if first_rule is None else first_rule
                    if change.fault_code not in injected.expected_fault_codes:
                        continue
                    if first_expected is None:
                        first_expected, cause = after, top
                    if change.fault_code not in MODEL_CODES and rule_cause is None:
                        rule_cause = top
            lead = None if first_model is None or first_rule is None else (first_rule - first_model) / 60
            results.append({"model_warning_min": None if first_model is None else round(first_model / 60, 1),
                            "model_code": model_code, "model_cause": model_cause,
                            "rule_alarm_min": None if first_rule is None else round(first_rule / 60, 1),
                            "lead_min": None if lead is None else round(lead, 1),
                            "detected": first_expected is not None, "top1": cause == injected.expected_cause,
                            "top1_at_model_warning": model_cause == injected.expected_cause,
                            "top1_at_rule_alarm": rule_cause == injected.expected_cause,
                            "model_evidence": model_evidence})
            machines += 1
            detected += first_expected is not None
            top1 += cause == injected.expected_cause
            top1_at_model += model_cause == injected.expected_cause
            top1_at_rule += rule_cause == injected.expected_cause
            if lead is not None:
                leads.append(lead)
        kind_leads = [r["lead_min"] for r in results if r["lead_min"] is not None]
        per_fault[kind] = {
            "machines": len(results), "detected": sum(r["detected"] for r in results),
            "model_warned": sum(r["model_warning_min"] is not None for r in results),
            "median_lead_min": statistics.median(kind_leads) if kind_leads else None,
            "top1": sum(r["top1"] for r in results) / len(results),
            "top1_at_model_warning": sum(r["top1_at_model_warning"] for r in results) / len(results),
            "top1_at_rule_alarm": sum(r["top1_at_rule_alarm"] for r in results) / len(results), "runs": results}
        for run in results:
            print(f"    {kind}: {run}")
        print(f"{kind:22s} detected {per_fault[kind]['detected']}/{len(results)}  model warned "
              f"{per_fault[kind]['model_warned']}/{len(results)}  median lead "
              f"{per_fault[kind]['median_lead_min']} min  top-1 {per_fault[kind]['top1']:.2f} (at the model's warning "
              f"{per_fault[kind]['top1_at_model_warning']:.2f})")

    alarms = sum(false_alarms.values())
    swing = max(air_score) - min(air_train)
    print(f"healthy: {alarms} false alarms in {hours_scored:.0f} machine-hours {sorted(false_alarms.items())}; "
          f"air {min(air_train):.1f}..{max(air_train):.1f} °C in training, {min(air_score):.1f}..{max(air_score):.1f} "
          f"°C scored")
    print(json.dumps({
        "false_alarms_per_1000_machine_hours": round(1000 * alarms / hours_scored, 2) if hours_scored else None,
        "false_alarms": alarms, "false_alarm_codes": false_alarms, "healthy_machine_hours": hours_scored,
        "air_training_c": [round(min(air_train), 1), round(max(air_train), 1)],
        "air_scored_c": [round(min(air_score), 1), round(max(air_score), 1)], "air_swing_c": round(swing, 1),
        "detection_rate": detected / machines if machines else None,
        "median_model_lead_min": statistics.median(leads) if leads else None,
        "model_warned_before_rules": sum(1 for lead in leads if lead > 0), "faulty_machines": machines,
        "top1_cause_accuracy": top1 / machines if machines else None,
        "top1_cause_accuracy_at_model_warning": top1_at_model / machines if machines else None,
        "top1_cause_accuracy_at_rule_alarm": top1_at_rule / machines if machines else None,
        "per_fault": {k: {n: v for n, v in f.items() if n != "runs"} for k, f in per_fault.items()},
        "settings": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(args).items()},
        "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
