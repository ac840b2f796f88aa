"""The service organisation ``ironsight run`` seeds beside the simulated fleet: a station near each
job site with a day-shift and a night-shift engineer, their vans, and a regional warehouse per site.

Vans carry the small parts that fix most visits; the heavy parts sit in the warehouses, one or two
of each, so that as they are used up dispatch starts routing through a warehouse further away.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

import psycopg

from device_sim.simulated_fleet import MODELS, SITES
from diagnostics.catalogue import FAULTS
from tickets.resources import (
    Engineer,
    Station,
    Vehicle,
    Warehouse,
    upsert_engineer,
    upsert_station,
    upsert_vehicle,
    upsert_warehouse,
)

VAN_PARTS = ("fan belt", "coolant hose set", "temperature sensor", "fuel filter", "service kit (filters, oil)")
# Station and warehouse offsets from their site, in degrees (about 9 km north-east, 6 km south-west).
STATION_OFFSET = (0.06, 0.08)
WAREHOUSE_OFFSET = (-0.04, -0.05)
ALL_MODELS = tuple(model for model, _ in MODELS)
CRANE_MODELS = tuple(model for model, kind in MODELS if kind == "crane")


def catalogue_parts() -> list[str]:
    """Every spare part the fault catalogue can ask for."""
    return sorted({cause.spare_part for fault in FAULTS.values() for cause in fault.causes if cause.spare_part})


def service_world() -> tuple[list[Station], list[Engineer], list[Vehicle], list[Warehouse]]:
    heavy = [part for part in catalogue_parts() if part not in VAN_PARTS]
    stations, engineers, vehicles, warehouses = [], [], [], []
    for index, site in enumerate(SITES):
        city = site.name.split("-")[0]
        station = Station(f"ST-{city}", f"{city.title()} service station", site.lat + STATION_OFFSET[0],
                          site.lon + STATION_OFFSET[1])
        stations.append(station)
        # Every other station's day engineer is not trained on cranes: a crane there needs a neighbour.
        day_skills = ALL_MODELS if index % 2 == 0 else tuple(m for m in ALL_MODELS if m not in CRANE_MODELS)
        for shift, start, end, skills in (("day", time(6), time(18), day_skills),
                                          ("night", time(18), time(6), ALL_MODELS)):
            engineer_id = f"ENG-{city}-{shift}"
            engineers.append(Engineer(engineer_id, f"{city.title()} {shift} engineer", station.id, skills,
                                      start, end, site.timezone))
            vehicles.append(Vehicle(f"VAN-{city}-{shift}", station.id, engineer_id,
                                    tuple((part, 2) for part in VAN_PARTS)))
        warehouses.append(Warehouse(f"WH-{city}", f"{city.title()} parts warehouse", site.lat + WAREHOUSE_OFFSET[0],
                                    site.lon + WAREHOUSE_OFFSET[1],
                                    tuple((part, 1 + (index + i) % 2) for i, part in enumerate(heavy))))
    return stations, engineers, vehicles, warehouses


def seed_service_world(conn: psycopg.Connection) -> None:
    """Register (or refresh) the service world; stock is counted afresh each time."""
    at = datetime.now(UTC)
    stations, engineers, vehicles, warehouses = service_world()
    for station in stations:
        upsert_station(conn, station)
    for engineer in engineers:
        upsert_engineer(conn, engineer)
    for vehicle in vehicles:
        upsert_vehicle(conn, vehicle, at=at)
    for warehouse in warehouses:
        upsert_warehouse(conn, warehouse, at=at)
    conn.commit()
