"""ISO 15143-3 ("AEMP 2.0") documents: the fleet snapshot and per-equipment time series, as JSON
objects and as XML, from one description. docs/iso15143.md maps every element to its source.

Elements follow the standard's names. In XML a measurement's time is its ``datetime`` attribute
and paging links are repeated ``Links`` elements (``rel``, ``href``); in JSON the time is the
member ``datetime`` and ``Links`` is an array.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import psycopg

from core.vocabulary import ENGINE_ON_RPM
from ingest import queries

NAMESPACE = "http://standards.iso.org/iso/15143/-3"
VERSION = "1"
PAGE_SIZE = 100
ALTITUDE_UNITS = "metre"
FUEL_UNITS = "litre"
ENGINE_RUNNING_RPM = ENGINE_ON_RPM


def stamp(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def links(base: str, page: int, pages: int) -> list[dict[str, str]]:
    """self, first, prev, next, last; pages are numbered from 1, an empty listing has one page."""
    pages = max(pages, 1)
    out = [{"rel": "self", "href": f"{base}/{page}"}, {"rel": "first", "href": f"{base}/1"}]
    if page > 1:
        out.append({"rel": "prev", "href": f"{base}/{min(page - 1, pages)}"})
    if page < pages:
        out.append({"rel": "next", "href": f"{base}/{page + 1}"})
    out.append({"rel": "last", "href": f"{base}/{pages}"})
    return out


def page_count(total: int) -> int:
    return max(1, math.ceil(total / PAGE_SIZE))


def _measured(ts: datetime | None, **values: Any) -> dict[str, Any] | None:
    if any(v is None for v in values.values()):
        return None
    return {**values, "datetime": stamp(ts)}


def equipment_snapshot(machine: dict[str, Any], totals: dict[str, Any] | None, fuel_last24_pct: float | None,
                       *, oem_name: str, tank_litres: float) -> dict[str, Any]:
    """One ``Equipment`` element of the snapshot; elements without data are left out, as the standard allows.
    The running totals (ingest.queries.usage_totals) carry the time of the newest reading they count."""
    ts = machine["last_ts"]
    counted = totals["through_ts"] if totals else None

    def litres(pct: float) -> float:
        return round(pct / 100.0 * tank_litres, 1)

    element: dict[str, Any] = {"EquipmentHeader": {
        "OEMName": oem_name, "Model": machine["model"], "EquipmentID": machine["id"],
        "SerialNumber": machine["serial"], "PIN": machine["serial"]}}
    optional = {
        "Location": _measured(ts, Latitude=machine["lat"], Longitude=machine["lon"]),
        "CumulativeOperatingHours": _measured(ts, Hour=_round(machine["engine_hours"])),
        "CumulativeIdleHours": _measured(counted, Hour=_round(totals["idle_s"] / 3600.0) if totals else None),
        "FuelUsed": _measured(counted, FuelUnits=FUEL_UNITS,
                              FuelConsumed=litres(totals["fuel_used_pct"]) if totals else None),
        "FuelUsedLast24": _measured(ts, FuelUnits=FUEL_UNITS,
                                    FuelConsumed=None if fuel_last24_pct is None else litres(fuel_last24_pct)),
        "FuelRemaining": _measured(ts, Percent=_round(machine["fuel_level_pct"])),
        "EngineStatus": _measured(ts, Running=None if machine["engine_rpm"] is None
                                  else machine["engine_rpm"] >= ENGINE_RUNNING_RPM),
    }
    element.update({k: v for k, v in optional.items() if v is not None})
    return element


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def fleet_document(conn: psycopg.Connection, machines: list[dict[str, Any]], total: int, page: int, base: str,
                   now: datetime, *, oem_name: str, tank_litres: float) -> dict[str, Any]:
    """The snapshot document: a pure read. The running totals are ingest's, kept by the writer as it
    stores readings (ingest.queries.usage_totals), each through its machine's newest reading."""
    totals = queries.usage_totals(conn, [m["id"] for m in machines])
    day_ago = now - timedelta(hours=24)
    equipment = [
        equipment_snapshot(m, totals.get(m["id"]),
                           queries.fuel_used_pct(conn, m["id"], day_ago, now) if m["last_ts"] else None,
                           oem_name=oem_name, tank_litres=tank_litres)
        for m in machines]
    return {"Version": VERSION, "SnapshotTime": stamp(now), "Links": links(base, page, page_count(total)),
            "Equipment": equipment}


# Time series: the data element in the path, the reading columns it needs, the column that must be
# reported, and how one reading becomes one item.
def _location(r: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"Latitude": r["lat"], "Longitude": r["lon"], "datetime": stamp(r["ts"])}


def _hours(r: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"Hour": _round(r["engine_hours"]), "datetime": stamp(r["ts"])}


def _fuel_remaining(r: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"Percent": _round(r["fuel_level_pct"]), "datetime": stamp(r["ts"])}


def _engine(r: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"Running": r["engine_rpm"] >= ENGINE_RUNNING_RPM, "datetime": stamp(r["ts"])}


def _fault_codes(r: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"CodeIdentifier": f"SPN {c['spn']} FMI {c['fmi']}",
             "CodeDescription": f"J1939 DM1 SPN {c['spn']} FMI {c['fmi']}, occurrence count {c.get('oc', 0)}",
             "CodeSeverity": "unknown", "CodeSource": "J1939", "datetime": stamp(r["ts"])} for c in r["fault_codes"]]


TIME_SERIES: dict[str, tuple[str, list[str], str, Any]] = {
    # path element: (item element, columns, reported column, item builder)
    "Locations": ("Location", ["lat", "lon"], "lat", _location),
    "CumulativeOperatingHours": ("CumulativeOperatingHours", ["engine_hours"], "engine_hours", _hours),
    "FuelRemaining": ("FuelRemaining", ["fuel_level_pct"], "fuel_level_pct", _fuel_remaining),
    "EngineCondition": ("EngineStatus", ["engine_rpm"], "engine_rpm", _engine),
    "FaultCodes": ("FaultCode", ["fault_codes"], "fault_codes", _fault_codes),
}


def time_series_document(conn: psycopg.Connection, machine: dict[str, Any], element: str, start: datetime,
                         end: datetime, page: int, base: str, *, oem_name: str) -> dict[str, Any]:
    item, columns, reported, build = TIME_SERIES[element]
    rows, total = queries.readings_page(conn, machine["id"], start, end, columns, not_null=reported,
                                        limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    items: list[dict[str, Any]] = []
    for r in rows:
        built = build(r, {})
        items.extend(built if isinstance(built, list) else [built])
    return {"Version": VERSION, "Links": links(base, page, page_count(total)),
            "EquipmentHeader": {"OEMName": oem_name, "Model": machine["model"], "EquipmentID": machine["id"],
                                "SerialNumber": machine["serial"], "PIN": machine["serial"]},
            item: items}


def to_xml(root: str, document: dict[str, Any]) -> bytes:
    """The XML form: ``datetime`` members become attributes, lists repeat their element, and the
    root's Version/SnapshotTime become its ``version``/``snapshotTime`` attributes."""
    element = ET.Element(root, {"xmlns": NAMESPACE})
    for key in ("Version", "SnapshotTime"):
        if document.get(key) is not None:
            element.set(key[0].lower() + key[1:], str(document[key]))
    for key, value in document.items():
        if key not in ("Version", "SnapshotTime"):
            _append(element, key, value)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def _append(parent: ET.Element, name: str, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _append(parent, name, item)
        return
    child = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "datetime":
                if inner is not None:
                    child.set("datetime", inner)
            else:
                _append(child, key, inner)
    elif isinstance(value, bool):
        child.text = "true" if value else "false"
    elif value is not None:
        child.text = str(value)
