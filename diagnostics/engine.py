"""One machine's diagnosis: its rulebook's rules and evidence, fed samples in time order.

The engine is pure (no I/O): the worker loads its state, feeds it, and stores the state back in
the same transaction as the faults it produced. Benchmarks and offline tools drive it directly.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime
from typing import Any

from diagnostics import evidence
from diagnostics.causes import diagnosis
from diagnostics.rulebook import Rulebook
from diagnostics.rules import EquipmentContext, FaultChange, ModelResidual, Offline, Sample, saved_load

# An open fault's probable causes are ranked again this often as evidence accumulates; a change of
# the most probable cause is reported as an "updated" change.
DIAGNOSIS_REFRESH_S = 30.0


class EquipmentEngine:
    def __init__(self, rulebook: Rulebook, ctx: EquipmentContext, state: dict[str, Any] | None = None) -> None:
        self.rulebook = rulebook
        self.ctx = ctx
        state = state or {}
        saved_rules = state.get("rules", {})
        # Rules added to the rulebook start afresh; state of rules no longer in it is dropped.
        self.rule_states: dict[str, dict[str, Any]] = {r.key: saved_rules.get(r.key, {}) for r in rulebook.rules}
        load = saved_load(saved_rules)
        for rule in rulebook.rules:
            if load is not None and isinstance(rule, ModelResidual) and "load" not in self.rule_states[rule.key]:
                self.rule_states[rule.key]["load"] = copy.deepcopy(load)
        self.evidence: dict[str, Any] = state.get("evidence", {})
        self.last_ts: datetime | None = _parse(state.get("last_ts"))
        self.last_arrival: datetime | None = _parse(state.get("last_arrival"))
        # Open faults by "rule|code": the most probable cause last reported, and when it was ranked.
        self.diagnosed: dict[str, dict[str, Any]] = state.get("diagnosed", {})

    def feed(self, sample: Sample, arrived_at: datetime | None = None) -> list[FaultChange]:
        """Evaluate one sample, newer than every sample fed before."""
        evidence.update(self.evidence, sample.ts, sample.values)
        changes: list[FaultChange] = []
        for rule in self.rulebook.rules:
            changes.extend(rule.evaluate(self.rule_states[rule.key], sample, self.ctx))
        self.last_ts = sample.ts
        if arrived_at is not None:
            self.last_arrival = max(self.last_arrival or arrived_at, arrived_at)
        return self._track([self._diagnosed(c) for c in changes], sample.ts)

    def tick(self, now: datetime) -> list[FaultChange]:
        """Time passing without samples (offline detection)."""
        if self.last_arrival is None:
            return []
        changes: list[FaultChange] = []
        for rule in self.rulebook.rules:
            if isinstance(rule, Offline):
                changes.extend(rule.tick(self.rule_states[rule.key], self.last_arrival, now))
        return self._track([self._diagnosed(c) for c in changes], now)

    def active_faults(self) -> list[str]:
        return [key for key, state in self.rule_states.items() if state.get("active")]

    def state(self) -> dict[str, Any]:
        return {
            "rules": {k: v for k, v in self.rule_states.items() if v},
            "evidence": self.evidence,
            "last_ts": self.last_ts.isoformat() if self.last_ts else None,
            "last_arrival": self.last_arrival.isoformat() if self.last_arrival else None,
            "rulebook_version": self.rulebook.version,
            "diagnosed": self.diagnosed,
        }

    def _track(self, changes: list[FaultChange], now: datetime) -> list[FaultChange]:
        """Follow open faults and re-rank their causes as the evidence grows."""
        fresh = set()
        for change in changes:
            key = f"{change.rule}|{change.fault_code}"
            if change.kind == "raised" and change.diagnosis:
                causes = change.diagnosis["causes"]
                self.diagnosed[key] = {"top": causes[0]["id"] if causes else None, "at": now.isoformat(),
                                       "version": change.rule_version}
                fresh.add(key)
            elif change.kind == "cleared":
                self.diagnosed.pop(key, None)
        stats = None
        for key, entry in self.diagnosed.items():
            if key in fresh or (now - datetime.fromisoformat(entry["at"])).total_seconds() < DIAGNOSIS_REFRESH_S:
                continue
            stats = stats if stats is not None else self.statistics()
            rule, code = key.split("|", 1)
            current = diagnosis(code, stats)
            entry["at"] = now.isoformat()
            top = current["causes"][0]["id"] if current["causes"] else None
            if top != entry["top"]:
                entry["top"] = top
                changes.append(FaultChange("updated", code, "", now, {}, rule, entry["version"], current))
        return changes

    def _diagnosed(self, change: FaultChange) -> FaultChange:
        if change.kind != "raised":
            return change
        return replace(change, diagnosis=diagnosis(change.fault_code, self.statistics()))

    def statistics(self) -> dict[str, float]:
        """The evidence causes are ranked on: the running statistics of the channels, and what the
        machine's models say of them."""
        stats = evidence.statistics(self.evidence)
        for rule in self.rulebook.rules:
            if isinstance(rule, ModelResidual):
                stats.update(rule.statistics(self.rule_states[rule.key], self.ctx))
        return stats


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None

