"""Dispatch benchmark: joint assignment against nearest-first on random service regions.

Each instance scatters ``--crews`` vans and ``--jobs`` waiting tickets over a region of
``--region-km`` square, with a share of jobs needing a part the van may not carry and a few
warehouses holding it; priorities are drawn like a fleet's alarms. Both rules plan every trip with
tickets.dispatch (the same code the API runs); the figure that matters is the sum of
priority-weighted arrival hours (lower is better) and how long the joint solve takes.

Last line: one JSON object with the figures and the settings.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from core.geo import distance_km
from tickets.dispatch import Crew, Job, Place, TravelModel, assign_greedily, assign_jointly, total_weighted_hours

PARTS = ("main hydraulic pump", "fan belt", "temperature sensor", "hydraulic hose kit")
PRIORITIES = (("critical", 0.15), ("major", 0.45), ("minor", 0.3), ("warning", 0.1))
MODELS = ("EX210", "EX350", "TC500", "CP42")
LAT0, LON0 = 48.0, 11.0


def _point(rng: random.Random, region_km: float) -> tuple[float, float]:
    km_per_deg_lon = distance_km(LAT0, LON0, LAT0, LON0 + 1)
    return (LAT0 + rng.uniform(0, region_km) / 111.2, LON0 + rng.uniform(0, region_km) / km_per_deg_lon)


def instance(rng: random.Random, crews: int, jobs: int, region_km: float):
    warehouses = [Place(f"W{i}", *_point(rng, region_km)) for i in range(4)]
    stock = {part: rng.sample(warehouses, 2) for part in PARTS}
    crew_list = [Crew(f"E{i}", f"V{i}", *_point(rng, region_km),
                      frozenset(rng.sample(MODELS, rng.randint(2, 4))),
                      frozenset(rng.sample(PARTS, rng.randint(0, 2)))) for i in range(crews)]
    names, weights = zip(*PRIORITIES, strict=True)
    job_list = [Job(i, f"EQ{i}", rng.choice(MODELS), *_point(rng, region_km),
                    rng.choice((*PARTS, None, None)), rng.choices(names, weights)[0]) for i in range(jobs)]
    return job_list, crew_list, stock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--crews", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--region-km", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    travel = TravelModel()
    gains, joint_h, greedy_h, solve_ms, better, worse, serves_more = [], [], [], [], 0, 0, 0
    for _ in range(args.instances):
        jobs, crews, stock = instance(rng, args.crews, args.jobs, args.region_km)
        started = time.perf_counter()
        joint = assign_jointly(jobs, crews, stock, travel)
        solve_ms.append((time.perf_counter() - started) * 1000)
        greedy = assign_greedily(jobs, crews, stock, travel)
        if len(joint) != len(greedy):
            # Nearest-first can spend the only qualified crew of one job on another: fewer jobs served
            # makes its hours incomparable (lower for the wrong reason). Counted, left out of the means.
            serves_more += len(joint) > len(greedy)
            continue
        j, g = total_weighted_hours(joint, jobs), total_weighted_hours(greedy, jobs)
        joint_h.append(j)
        greedy_h.append(g)
        gains.append((g - j) / g if g else 0.0)
        better += j < g - 1e-9
        worse += j > g + 1e-9
    solve_ms.sort()
    result = {
        "instances": args.instances, "crews": args.crews, "jobs": args.jobs, "region_km": args.region_km,
        "joint_weighted_h_mean": round(statistics.mean(joint_h), 3),
        "greedy_weighted_h_mean": round(statistics.mean(greedy_h), 3),
        "mean_saving_pct": round(100 * statistics.mean(gains), 2),
        "compared": len(joint_h), "joint_better": better, "joint_worse": worse,
        "joint_serves_more_jobs": serves_more,
        "solve_ms_p50": round(solve_ms[len(solve_ms) // 2], 2),
        "solve_ms_p99": round(solve_ms[int(len(solve_ms) * 0.99) - 1], 2),
    }
    print(f"joint assignment: {result['mean_saving_pct']}% fewer weighted arrival hours than nearest-first "
          f"(better on {better}/{len(joint_h)}, worse on {worse}; serves more jobs on {serves_more} other "
          f"instances); solve p50 {result['solve_ms_p50']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
