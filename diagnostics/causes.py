"""Ranking a fault's probable causes by the evidence, with the remedy to try first."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from diagnostics.catalogue import Cause, Indicator, fault_info


@dataclass(frozen=True, slots=True)
class RankedCause:
    cause: Cause
    probability: float
    because: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.cause.id, "title": self.cause.title, "probability": round(self.probability, 3),
            "because": list(self.because), "remedy": list(self.cause.remedy),
            "remote_resolvable": self.cause.remote_resolvable, "spare_part": self.cause.spare_part,
        }


def _holds(indicator: Indicator, stats: dict[str, float]) -> bool:
    value = stats.get(indicator.statistic)
    if value is None:
        return False
    return value > indicator.value if indicator.op == ">" else value < indicator.value


def rank_causes(fault_code: str, stats: dict[str, float]) -> list[RankedCause]:
    """Causes of the fault, most probable first: log prior plus the weights of the evidence seen."""
    causes = fault_info(fault_code).causes
    scored = []
    for cause in causes:
        seen = [i for i in cause.indicators if _holds(i, stats)]
        scored.append((math.log(cause.prior) + sum(i.weight for i in seen), cause, tuple(i.meaning for i in seen)))
    if not scored:
        return []
    top = max(score for score, _, _ in scored)
    total = sum(math.exp(score - top) for score, _, _ in scored)
    ranked = [RankedCause(cause, math.exp(score - top) / total, because) for score, cause, because in scored]
    return sorted(ranked, key=lambda r: -r.probability)


def diagnosis(fault_code: str, stats: dict[str, float]) -> dict[str, Any]:
    """The dispatcher's view of a fault: what it is, ranked causes, and whether a visit is likely."""
    info = fault_info(fault_code)
    ranked = rank_causes(fault_code, stats)
    return {
        "title": info.title,
        "category": info.category,
        "causes": [r.to_dict() for r in ranked],
        "remote_resolvable": ranked[0].cause.remote_resolvable if ranked else False,
        "spare_part": next((r.cause.spare_part for r in ranked if not r.cause.remote_resolvable), None),
        "evidence": stats,
    }
