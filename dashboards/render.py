"""Render every dashboard to Grafana JSON: ``dashboards/json/<uid>.json``, committed.

The JSON is what Grafana's file provisioning reads and what ``push`` uploads; it is generated
only from the Python in this package, so ``render`` after a change and a test keeps them in step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import alarm_console, caller, fleet, health, machine, work_orders
from dashboards.blocks import to_json
from dashboards.constants import Json

JSON_DIR = Path(__file__).parent / "json"

# In the order a dispatcher meets them, then the front desk's; then IronSight's own health, for
# whoever runs it.
BUILDERS: tuple[Callable[[], Dashboard], ...] = (
    fleet.dashboard, machine.dashboard, alarm_console.dashboard, work_orders.dashboard, caller.dashboard,
    health.dashboard)


def dashboards() -> list[Json]:
    rendered = [to_json(build()) for build in BUILDERS]
    uids = [d["uid"] for d in rendered]
    if len(set(uids)) != len(uids):
        raise ValueError(f"dashboard uids are not unique: {uids}")
    return rendered


def to_text(dashboard: Json) -> str:
    """Stable text: sorted keys, two-space indent, UTF-8, a final newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered_files() -> dict[str, str]:
    return {f"{d['uid']}.json": to_text(d) for d in dashboards()}


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard and remove JSON files of dashboards that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered_files()
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    return written


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Names of files in ``directory`` that differ from what ``write`` would produce (missing,
    changed, or left over)."""
    files = rendered_files()
    out = [name for name, text in files.items()
           if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text]
    out += [p.name for p in directory.glob("*.json") if p.name not in files]
    return sorted(out)
