"""Diagnosis benchmark on the simulator: every injectable fault, and healthy machines.

Each machine is simulated in simulated time (not wall-clock), its readings fed to the real
diagnostics engine (diagnostics.engine.EquipmentEngine with the production rulebook, catalogue and
models). Per machine, the first ``--history-h`` hours are healthy history: its oil-temperature
model is trained on them exactly as ``ironsight train`` trains from the database. Then, on faulty
machines, the fault starts at a random time; the run goes on for ``--after-min`` minutes.

Scored per injected fault kind (ground truth from device_sim.faults):
- detected: the engine raised one of the fault's expected codes after its onset;
- delay: simulated seconds from onset to the moment the engine raised it;
- top-1 cause: the first expected fault's most probable cause is the injected one.
False alarms: faults raised on healthy machines after their history, per 1,000 machine-hours.

Last line: one JSON object with the figures and the settings.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device_sim.faults import INJECTABLE_FAULTS  # noqa: E402
from device_sim.machine import SimulatedMachine  # noqa: E402
from device_sim.simulated_fleet import SITES_BY_NAME, build_fleet  # noqa: E402
from diagnostics.engine import EquipmentEngine  # noqa: E402
from diagnostics.models import fit_models  # noqa: E402
from diagnostics.rulebook import rulebook_for  # noqa: E402
from diagnostics.rules import EquipmentContext, Sample, Site  # noqa: E402

START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
SERVICE_INTERVAL_H = 250.0
# A dispatcher picks an alarm up within minutes; the diagnosis shown then is the one that counts.
TOP_CAUSE_REVIEW_S = 120.0


@dataclass
class Outcome:
    kind: str | None
    detected_after_s: float | None = None
    top_cause: str | None = None  # when the fault was raised
    top_cause_later: str | None = None  # after TOP_CAUSE_REVIEW_S, when a dispatcher picks it up
    false_alarms: int = 0
    hours_scored: float = 0.0
    codes_raised: tuple[str, ...] = ()


def simulate(spec, seed: int, *, history_s: float, total_s: float, step_s: float,
             history_step_s: float = 2.0, start: datetime = START) -> Outcome:
    machine = SimulatedMachine(spec, start, seed=seed)
    # Keep healthy machines clear of a service boundary during the run: a real reminder is not a false alarm.
    machine.engine_hours = math.floor(machine.engine_hours / SERVICE_INTERVAL_H) * SERVICE_INTERVAL_H + 50.0
    site = SITES_BY_NAME[spec.site]
    ctx = EquipmentContext(spec.equipment_id, spec.model, Site(site.lat, site.lon, site.radius_m, site.timezone))
    history: list[tuple[datetime, dict]] = []
    t = 0.0
    while t < history_s:
        t += history_step_s
        machine.advance(history_step_s)
        reading = machine.reading(start + timedelta(seconds=t))
        history.append((reading.ts, _values(reading)))
    models = fit_models([history])
    engine = EquipmentEngine(rulebook_for(spec.model), replace(ctx, models=models))
    for ts, values in history:  # the engine has seen the history live, as in production
        engine.feed(Sample(ts, values))
    injected = INJECTABLE_FAULTS.get(spec.fault) if spec.fault else None
    outcome = Outcome(spec.fault)
    raised: list[str] = []
    followed: tuple[str, str] | None = None  # (rule, code) of the fault that detected the injection
    while t < total_s:
        t += step_s
        machine.advance(step_s)
        reading = machine.reading(start + timedelta(seconds=t))
        codes = tuple((c.spn, c.fmi, c.oc) for c in reading.fault_codes)
        detected_at = None if outcome.detected_after_s is None else machine.fault_started_at + timedelta(
            seconds=outcome.detected_after_s)
        for change in engine.feed(Sample(reading.ts, _values(reading), codes)):
            if change.kind == "updated" and followed == (change.rule, change.fault_code) and (
                    reading.ts - detected_at).total_seconds() <= TOP_CAUSE_REVIEW_S:
                outcome.top_cause_later = change.diagnosis["causes"][0]["id"]
            if change.kind != "raised":
                continue
            raised.append(change.fault_code)
            onset = machine.fault_started_at
            if injected is None or onset is None or reading.ts < onset:
                outcome.false_alarms += 1
            elif change.fault_code in injected.expected_fault_codes and outcome.detected_after_s is None:
                outcome.detected_after_s = (reading.ts - onset).total_seconds()
                causes = change.diagnosis["causes"] if change.diagnosis else []
                outcome.top_cause = outcome.top_cause_later = causes[0]["id"] if causes else None
                followed = (change.rule, change.fault_code)
    outcome.hours_scored = (total_s - history_s) / 3600.0
    outcome.codes_raised = tuple(sorted(set(raised)))
    return outcome


def _values(reading) -> dict:
    return {name: getattr(reading, name) for name in ("oil_temp_c", "engine_rpm", "hydraulic_pressure_bar",
                                                        "coolant_temp_c", "fuel_level_pct", "engine_hours", "lat",
                                                        "lon", "speed_kmh", "ambient_temp_c")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-fault", type=int, default=10, help="machines per injected fault kind")
    parser.add_argument("--healthy", type=int, default=100, help="healthy machines")
    parser.add_argument("--healthy-hours", type=float, default=10.0, help="scored hours per healthy machine")
    parser.add_argument("--history-h", type=float, default=1.0, help="healthy history before scoring")
    parser.add_argument("--after-min", type=float, default=30.0, help="minutes simulated after a fault's onset")
    parser.add_argument("--step", type=float, default=2.0, help="seconds between readings")
    parser.add_argument("--healthy-step", type=float, default=5.0, help="seconds between healthy readings")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=datetime.fromisoformat, default=START,
                        help="simulated start, with time zone (the season and time of day the machines work in)")
    args = parser.parse_args()

    started = time.monotonic()
    rng = random.Random(args.seed)
    history_s = args.history_h * 3600
    kinds = list(INJECTABLE_FAULTS)
    faulty = build_fleet(args.per_fault * len(kinds), fault_share=1.0, seed=args.seed, id_prefix="F",
                         faults=tuple(kinds))
    outcomes: list[Outcome] = []
    for i, spec in enumerate(faulty):
        onset_s = history_s + rng.uniform(300.0, 1800.0)
        spec = replace(spec, fault_after_s=onset_s)
        outcomes.append(simulate(spec, args.seed * 10_000 + i, history_s=history_s,
                                 total_s=onset_s + args.after_min * 60, step_s=args.step, start=args.start))
    healthy = build_fleet(args.healthy, fault_share=0.0, seed=args.seed + 1, id_prefix="H")
    healthy_outcomes = [simulate(spec, args.seed * 20_000 + i, history_s=history_s,
                                 total_s=history_s + args.healthy_hours * 3600, step_s=args.healthy_step,
                                 history_step_s=args.step, start=args.start)
                        for i, spec in enumerate(healthy)]

    print(f"{'injected fault':24} {'detected':>9} {'median delay s':>15} {'top-1 at raise':>15} "
          f"{'top-1 +2 min':>13}  raised codes")
    per_kind = {}
    delays_all, top1_hits, top1_early_hits, top1_total = [], 0, 0, 0
    for kind in kinds:
        rows = [o for o in outcomes if o.kind == kind]
        detected = [o for o in rows if o.detected_after_s is not None]
        delays = [o.detected_after_s for o in detected]
        expected = INJECTABLE_FAULTS[kind].expected_cause
        early_hits = sum(o.top_cause == expected for o in detected)
        hits = sum(o.top_cause_later == expected for o in detected)
        delays_all += delays
        top1_hits += hits
        top1_early_hits += early_hits
        top1_total += len(detected)
        codes = sorted({c for o in rows for c in o.codes_raised})
        median = statistics.median(delays) if delays else None
        per_kind[kind] = {"detected": len(detected), "machines": len(rows),
                          "median_delay_s": round(median, 1) if median is not None else None,
                          "top1_at_raise": round(early_hits / len(detected), 3) if detected else 0.0,
                          "top1": round(hits / len(detected), 3) if detected else 0.0}
        print(f"{kind:24} {len(detected):>4}/{len(rows):<4} {median if median is not None else float('nan'):>15.1f} "
              f"{early_hits:>8}/{len(detected):<6} {hits:>6}/{len(detected):<6}  {', '.join(codes)}")
    machine_hours = sum(o.hours_scored for o in healthy_outcomes)
    false_alarms = sum(o.false_alarms for o in healthy_outcomes)
    fa_codes = sorted({c for o in healthy_outcomes for c in o.codes_raised})
    detection_rate = sum(v["detected"] for v in per_kind.values()) / sum(v["machines"] for v in per_kind.values())
    result = {
        "detection_rate": round(detection_rate, 4),
        "median_delay_s": round(statistics.median(delays_all), 1) if delays_all else None,
        "false_alarms_per_1000_machine_hours": round(1000 * false_alarms / machine_hours, 3),
        "false_alarms": false_alarms,
        "healthy_machine_hours": round(machine_hours, 1),
        "top1_cause_accuracy": round(top1_hits / top1_total, 4) if top1_total else 0.0,
        "top1_cause_accuracy_at_raise": round(top1_early_hits / top1_total, 4) if top1_total else 0.0,
        "per_fault": per_kind,
        "settings": {"per_fault": args.per_fault, "healthy": args.healthy, "healthy_hours": args.healthy_hours,
                     "history_h": args.history_h, "after_min": args.after_min, "step_s": args.step,
                     "healthy_step_s": args.healthy_step, "start": args.start.isoformat(),
                     "seed": args.seed},
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"healthy: {false_alarms} false alarms in {machine_hours:.0f} machine-hours"
          + (f" ({', '.join(fa_codes)})" if fa_codes else ""))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
