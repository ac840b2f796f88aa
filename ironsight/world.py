"""The service organisation ``ironsight run`` seeds beside the simulated fleet: a station near each
job site with a day-shift and a night-shift engineer, their vans, and a regional warehouse per site;
and the fleet's customers as records: company, contract tier, and a site manager at each site the
customer works at, with a mobile number of the site's country.

Vans carry the small parts that fix most visits; the heavy parts sit in the warehouses, one or two
of each, so that as they are used up dispatch starts routing through a warehouse further away.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, time

import phonenumbers
import psycopg

from core.customers import get_customer, list_contacts, save_contact, upsert_customer
from device_sim.simulated_fleet import CUSTOMERS, MODELS, SITES, build_fleet
from diagnostics.catalogue import DTC_TABLE, FAULTS
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import Dtc
from tickets.parts_catalogue import CataloguePart, add_missing
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
from tickets.sla import put_tier

VAN_PARTS = ("fan belt", "coolant hose set", "temperature sensor", "fuel filter", "service kit (filters, oil)")
# Station and warehouse offsets from their site, in degrees (about 9 km north-east, 6 km south-west).
STATION_OFFSET = (0.06, 0.08)
WAREHOUSE_OFFSET = (-0.04, -0.05)
ALL_MODELS = tuple(model for model, _ in MODELS)
CRANE_MODELS = tuple(model for model, kind in MODELS if kind == "crane")


def catalogue_parts() -> list[str]:
    """Every spare part the fault catalogue can ask for."""
    return sorted({cause.spare_part for fault in FAULTS.values() for cause in fault.causes if cause.spare_part})


def part_number_for(name: str) -> str:
    """The simulated manufacturer's number of a part: its name in capitals, words joined by hyphens."""
    return "IS-" + re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-")


def catalogue_entries() -> list[CataloguePart]:
    """A catalogue entry per spare part the fault catalogue can ask for, fitting the models whose
    rulebook can raise a fault that calls for it, described by the causes it fixes."""
    fixes: dict[str, set[str]] = {}
    fits: dict[str, set[str]] = {}
    for model in ALL_MODELS:
        for rule in rulebook_for(model).rules:
            # The DTC rule raises the faults its J1939 codes map to, not a code of its own.
            codes = {m.fault_code for m in DTC_TABLE.values()} if isinstance(rule, Dtc) else {rule.fault_code}
            for code in codes & FAULTS.keys():
                for cause in FAULTS[code].causes:
                    if cause.spare_part:
                        fits.setdefault(cause.spare_part, set()).add(model)
    for fault in FAULTS.values():
        for cause in fault.causes:
            if cause.spare_part:
                fixes.setdefault(cause.spare_part, set()).add(cause.title)
    return [CataloguePart(part_number_for(part), part, "Fixes: " + "; ".join(sorted(fixes[part])) + ".",
                          tuple(sorted(fits.get(part, ()))))
            for part in catalogue_parts()]


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
        for nth, (shift, start, end, skills) in enumerate((("day", time(6), time(18), day_skills),
                                                           ("night", time(18), time(6), ALL_MODELS))):
            engineer_id = f"ENG-{city}-{shift}"
            engineers.append(Engineer(engineer_id, f"{city.title()} {shift} engineer", station.id, skills,
                                      start, end, site.timezone,
                                      phone=mobile_number(site.country, ENGINEER_NUMBERS + 2 * index + nth),
                                      email=f"{engineer_id.lower()}@service.ironsight.example"))
            vehicles.append(Vehicle(f"VAN-{city}-{shift}", station.id, engineer_id,
                                    tuple((part, 2) for part in VAN_PARTS)))
        warehouses.append(Warehouse(f"WH-{city}", f"{city.title()} parts warehouse", site.lat + WAREHOUSE_OFFSET[0],
                                    site.lon + WAREHOUSE_OFFSET[1],
                                    tuple((part, 1 + (index + i) % 2) for i, part in enumerate(heavy))))
    return stations, engineers, vehicles, warehouses


# Who answers for each service group in the simulated world (notifications to a group reach them).
GROUP_MEMBERS = {
    "call centre": ("callcentre.sim", "Call centre agent"),
    "quality / R&D": ("quality.sim", "Quality engineer"),
    "service management": ("service-manager.sim", "Service manager"),
    "dispatch": ("dispatch-lead.sim", "Dispatch lead"),
    "service engineering": ("service-engineering.sim", "Service engineering lead"),
    "parts logistics": ("parts.sim", "Parts logistics lead"),
    "management": ("management.sim", "Service director"),
    "R&D": ("rnd.sim", "R&D engineer"),
}
# The simulated engineers' mobile numbers end from here on, after the customers' contacts.
ENGINEER_NUMBERS = 9000


def seed_service_world(conn: psycopg.Connection) -> None:
    """Register (or refresh) the service world; stock is counted afresh each time. Catalogue
    entries are only added where missing: once there, they are staff's to maintain."""
    at = datetime.now(UTC)
    for group, (member, name) in GROUP_MEMBERS.items():
        conn.execute("INSERT INTO service_group_members (group_name, member, name, email) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT DO NOTHING",
                     (group, member, name, f"{member.removesuffix('.sim')}@ironsight.example"))
    stations, engineers, vehicles, warehouses = service_world()
    for station in stations:
        upsert_station(conn, station)
    for engineer in engineers:
        upsert_engineer(conn, engineer)
    for vehicle in vehicles:
        upsert_vehicle(conn, vehicle, at=at)
    for warehouse in warehouses:
        upsert_warehouse(conn, warehouse, at=at)
    add_missing(conn, catalogue_entries(), at=at)
    conn.commit()


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    description: str
    respond_h: float
    arrive_h: float
    resolve_h: float
    remote_diagnosis_min: float
    # Requests other than faults: kind → (respond_h, resolve_h).
    limits: dict[str, tuple[float, float]]


TIERS = (
    Tier("gold", "round-the-clock priority service", 1.0, 4.0, 12.0, 20.0,
         {"consultation": (2.0, 8.0), "complaint": (4.0, 48.0), "maintenance": (24.0, 72.0)}),
    Tier("silver", "priority service on working days", 2.0, 6.0, 24.0, 30.0,
         {"consultation": (4.0, 24.0), "complaint": (8.0, 96.0), "maintenance": (48.0, 120.0)}),
    Tier("standard", "service on working days", 4.0, 8.0, 48.0, 45.0,
         {"consultation": (8.0, 48.0), "complaint": (24.0, 168.0), "maintenance": (72.0, 240.0)}),
)
# Company name and contract tier of each of the simulated fleet's customers.
COMPANIES = {
    "acme-construction": ("Acme Construction B.V.", "gold"),
    "nordbau": ("Nordbau GmbH", "silver"),
    "sud-travaux": ("Sud Travaux S.A.", "standard"),
    "delta-infra": ("Delta Infra S.p.A.", "silver"),
}
# Each customer's fleet manager hears of every work order by e-mail, in their language.
FLEET_MANAGERS = {
    "acme-construction": ("Eva Jansen", "en"),
    "nordbau": ("Wang Lei", "zh"),
    "sud-travaux": ("Claire Dubois", "en"),
    "delta-infra": ("Chen Jing", "zh"),
}
# Two customers work at each site: the site managers there of the first (in CUSTOMERS' order), then the second.
SITE_MANAGERS = {
    "NL": ("Sanne de Vries", "Daan Bakker"),
    "DE": ("Jonas Becker", "Lena Schmidt"),
    "FR": ("Camille Martin", "Hugo Bernard"),
    "IT": ("Giulia Rossi", "Marco Bianchi"),
    "PL": ("Piotr Nowak", "Anna Kowalska"),
    "ES": ("Lucía García", "Javier López"),
}


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    role: str
    email: str
    country: str
    phone: str  # E.164
    language: str | None = None      # the country's by default
    preferred_channel: str = "phone"
    notify_all: bool = False         # hears of every work order of the fleet


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    tier: str
    contract_number: str
    contacts: tuple[Contact, ...]


def mobile_number(country: str, serial: int) -> str:
    """A mobile number of ``country`` in E.164: the country's example mobile number ending in
    ``serial``, so that no two simulated people share a number or its last digits."""
    example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        raise ValueError(f"no mobile numbers known for {country!r}")
    national = str(example.national_number)
    return f"+{example.country_code}{national[:-4]}{serial:04d}"


def _email(name: str, customer_id: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return f"{re.sub(r'[^a-z]+', '.', plain).strip('.')}@{customer_id}.example"


def customers_world() -> list[Customer]:
    """The simulated fleet's customers, each with a site manager at every site it has machines at."""
    # Machines go to customers and sites in turn: this many cover every pairing the fleet has.
    pairs = {(spec.customer, spec.site) for spec in build_fleet(math.lcm(len(CUSTOMERS), len(SITES)),
                                                                 fault_share=0.0)}
    serial = 0
    customers = []
    for index, customer_id in enumerate(CUSTOMERS):
        name, tier = COMPANIES[customer_id]
        contacts = []
        for site in SITES:
            if (customer_id, site.name) not in pairs:
                continue
            nth = [c for c in CUSTOMERS if (c, site.name) in pairs].index(customer_id)
            person = SITE_MANAGERS[site.country][nth]
            serial += 1
            contacts.append(Contact(person, f"site manager, {site.name}", _email(person, customer_id), site.country,
                                    mobile_number(site.country, serial)))
        manager, language = FLEET_MANAGERS[customer_id]
        serial += 1
        home = contacts[0].country  # the fleet manager sits in the customer's first site's country
        contacts.append(Contact(manager, "fleet manager", _email(manager, customer_id), home,
                                mobile_number(home, serial), language=language, preferred_channel="email",
                                notify_all=True))
        customers.append(Customer(customer_id, name, tier, f"SC-{index + 1:04d}", tuple(contacts)))
    return customers


def seed_customers(conn: psycopg.Connection) -> None:
    """Register (or refresh) the contract tiers and the simulated customers with their contacts. A
    contact is known by its name, so a second run changes it in place rather than adding another."""
    for tier in TIERS:
        put_tier(conn, tier.name, description=tier.description, respond_h=tier.respond_h, arrive_h=tier.arrive_h,
                 resolve_h=tier.resolve_h, remote_diagnosis_min=tier.remote_diagnosis_min, limits=tier.limits)
    for customer in customers_world():
        upsert_customer(conn, customer.id, {"name": customer.name, "tier": customer.tier,
                                            "contract_number": customer.contract_number},
                        create=get_customer(conn, customer.id) is None)
        known = {row["name"]: row["id"] for row in list_contacts(conn, customer.id)}
        for contact in customer.contacts:
            save_contact(conn, customer.id, known.get(contact.name),
                         {"name": contact.name, "role": contact.role, "email": contact.email,
                          "preferred_channel": contact.preferred_channel,
                          "language": contact.language or contact.country.lower(), "notify_all": contact.notify_all,
                          "phones": [contact.phone]}, contact.country)
    conn.commit()
