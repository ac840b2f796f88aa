"""ISO 15143-3 (AEMP 2.0) documents against sample documents written from the standard's element
names (tests/data), with values from a machine whose readings are known exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin
from xml.etree import ElementTree as ET

import pytest

from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading
from ingest.writer import Batch, BatchWriter
from tests.helpers import ApiServer, seed_tenant

DATA = Path(__file__).parent / "data"
NS = "{http://standards.iso.org/iso/15143/-3}"
READINGS = 120


def catch_up_usage(conn) -> None:
    """What the ingest workers' usage job does every few seconds, at once and for every reading stored
    (the seeded ones run up to now, the test's own beyond it)."""
    from ingest import usage

    usage.catch_up(conn, settle_s=-86400)
    conn.commit()


@pytest.fixture
def iso(settings, conn):
    alpha = seed_tenant(conn, "alpha-corp", "ALPHA-1")
    seed_tenant(conn, "beta-corp", "BETA-1")
    catch_up_usage(conn)
    server = ApiServer(settings, settings.database_url)
    yield server, server.user("customer", customer="alpha-corp"), alpha
    server.close()


def paths(element: ET.Element, prefix: str = "") -> set[str]:
    """Every element path below ``element`` (namespace removed), with @datetime where present."""
    out = set()
    for child in element:
        path = f"{prefix}/{child.tag.removeprefix(NS)}"
        out.add(path + ("@datetime" if "datetime" in child.attrib else ""))
        out |= paths(child, path)
    return out


def test_the_fleet_snapshot_carries_the_standards_elements_with_the_machines_values(iso):
    server, client, alpha = iso
    body = client.get("/iso15143/Fleet/1", headers={"Accept": "application/json"}).json()
    assert body["Version"] == "1" and body["SnapshotTime"].endswith("Z")
    assert [link["rel"] for link in body["Links"]] == ["self", "first", "last"]
    assert body["Links"][0]["href"].endswith("/api/v1/iso15143/Fleet/1")
    [machine] = body["Equipment"]
    assert machine["EquipmentHeader"] == {"OEMName": "IronSight", "Model": "EX210", "EquipmentID": "ALPHA-1",
                                          "SerialNumber": "SN-ALPHA-1", "PIN": "SN-ALPHA-1"}
    assert machine["Location"]["Latitude"] == pytest.approx(51.9 + (READINGS - 1) * 1e-4)
    assert machine["CumulativeOperatingHours"]["Hour"] == pytest.approx(1000 + (READINGS - 1) / 60, abs=0.01)
    assert machine["FuelRemaining"]["Percent"] == pytest.approx(90 - (READINGS - 1) * 0.1, abs=0.01)
    # 0.1 % of a 400 l tank a minute for 119 minutes; idling every other ten minutes (59 counted minutes).
    assert machine["FuelUsedLast24"] == {"FuelUnits": "litre", "FuelConsumed": pytest.approx(47.6, abs=0.05),
                                         "datetime": machine["Location"]["datetime"]}
    assert machine["FuelUsed"]["FuelConsumed"] == pytest.approx(47.6, abs=0.05)
    assert machine["CumulativeIdleHours"]["Hour"] == pytest.approx(59 / 60, abs=0.01)
    assert machine["EngineStatus"]["Running"] is True

    xml = client.get("/iso15143/Fleet/1", headers={"Accept": "application/xml"})
    assert xml.headers["content-type"].startswith("application/xml")
    ours = ET.fromstring(xml.content)
    sample = ET.parse(DATA / "iso15143_fleet_sample.xml").getroot()
    assert ours.tag == sample.tag == f"{NS}Fleet"
    assert set(ours.attrib) == set(sample.attrib) == {"version", "snapshotTime"}
    # A fully reported machine has exactly the sample's elements, times as attributes where the sample has them.
    assert paths(ours.find(f"{NS}Equipment"), "") == paths(sample.find(f"{NS}Equipment"), "")
    assert paths(ours) <= paths(sample)
    hours = ours.find(f"{NS}Equipment/{NS}CumulativeOperatingHours/{NS}Hour")
    assert float(hours.text) == pytest.approx(machine["CumulativeOperatingHours"]["Hour"])


def test_running_totals_count_each_reading_once_and_catch_up_with_new_ones(iso, conn):
    server, client, alpha = iso
    used = [client.get("/iso15143/Fleet/1").json()["Equipment"][0]["FuelUsed"]["FuelConsumed"] for _ in range(2)]
    assert used[0] == used[1]
    last = conn.execute("SELECT max(ts), min(fuel_level_pct) FROM readings WHERE equipment_id = 'ALPHA-1'").fetchone()
    conn.commit()
    # Ten more minutes idling, burning 0.5 % of the tank a minute.
    more = [("ALPHA-1", Reading(ts=last[0] + timedelta(minutes=i), engine_rpm=800.0, speed_kmh=0.0,
                                fuel_level_pct=last[1] - 0.5 * i, engine_hours=1002.0 + i / 60))
            for i in range(1, 11)]
    BatchWriter(conn, "more", datetime.now(UTC)).write(Batch(messages=1, readings=more, sequences={"ALPHA-1": [999]}))
    conn.commit()
    catch_up_usage(conn)
    machine = client.get("/iso15143/Fleet/1", params={"until": "ignored"}).json()["Equipment"][0]
    assert machine["FuelUsed"]["FuelConsumed"] == pytest.approx(used[0] + 10 * 0.5 * 4.0, abs=0.05)
    # The last old reading idled on until the first new one, and nine of the new ones until the next.
    assert machine["CumulativeIdleHours"]["Hour"] == pytest.approx((59 + 10) / 60, abs=0.01)


def test_an_aemp_client_pages_the_whole_fleet_by_its_links(settings, conn):
    register_equipment(conn, [EquipmentRecord(f"G-{i:03d}", f"SG-{i:03d}", "EX210", "excavator", "gamma")
                              for i in range(205)])
    register_equipment(conn, [EquipmentRecord("OTHER-1", "SO-1", "EX210", "excavator", "delta")])
    conn.commit()
    server = ApiServer(settings, settings.database_url)
    try:
        client = server.user("customer", customer="gamma")
        seen, url, pages = [], server.url + "/api/v1/iso15143/Fleet/1", 0
        while url:
            response = client.get(url)
            body = response.json()
            pages += 1
            seen += [e["EquipmentHeader"]["EquipmentID"] for e in body["Equipment"]]
            rels = {link["rel"]: link["href"] for link in body["Links"]}
            assert rels["last"].endswith("/Fleet/3") and rels["first"].endswith("/Fleet/1")
            # An href is resolved against the document's own address (RFC 3986), as a client does.
            url = urljoin(str(response.url), rels["next"]) if "next" in rels else None
        assert pages == 3 and len(seen) == len(set(seen)) == 205 and "OTHER-1" not in seen
        assert client.get("/iso15143/Fleet/4").status_code == 404
        assert client.get("/iso15143/Fleet/0").status_code == 422
        # Machines without readings carry their header only.
        assert set(client.get("/iso15143/Fleet/3").json()["Equipment"][0]) == {"EquipmentHeader"}
    finally:
        server.close()


def test_time_series_pages_and_fault_codes_match_the_sample(iso):
    server, client, alpha = iso
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(hours=3)
    span = f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/{end.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    first = client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/Locations/{span}/1").json()
    second = client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/Locations/{span}/2").json()
    assert (len(first["Location"]), len(second["Location"])) == (100, READINGS - 100)
    assert {link["rel"]: link["href"] for link in first["Links"]}["next"].endswith(f"/Locations/{span}/2")
    assert "next" not in {link["rel"] for link in second["Links"]}
    assert first["Location"][0]["datetime"] < second["Location"][0]["datetime"]
    hours = client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/CumulativeOperatingHours/{span}/2").json()
    assert hours["CumulativeOperatingHours"][-1]["Hour"] == pytest.approx(1000 + (READINGS - 1) / 60, abs=0.01)

    xml = client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/FaultCodes/{span}/1", headers={"Accept": "text/xml"})
    ours = ET.fromstring(xml.content)
    sample = ET.parse(DATA / "iso15143_faultcodes_sample.xml").getroot()
    assert ours.tag == sample.tag and paths(ours) == paths(sample)
    assert ours.find(f"{NS}FaultCode/{NS}CodeIdentifier").text == "SPN 110 FMI 0"

    assert client.get(f"/iso15143/Fleet/Equipment/ID/BETA-1/Locations/{span}/1").status_code == 404
    assert client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/Gossip/{span}/1").status_code == 422
    backwards = f"{end.strftime('%Y-%m-%dT%H:%M:%SZ')}/{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert client.get(f"/iso15143/Fleet/Equipment/ID/ALPHA-1/Locations/{backwards}/1").status_code == 422


def test_content_is_negotiated_by_accept(iso):
    server, client, alpha = iso
    assert client.get("/iso15143/Fleet/1", headers={"Accept": "text/html"}).status_code == 406
    preferred = client.get("/iso15143/Fleet/1", headers={"Accept": "application/xml;q=0.5, application/json"})
    assert preferred.headers["content-type"].startswith("application/json")
    assert client.get("/iso15143/Fleet/1", headers={"Accept": "*/*"}).headers["content-type"].startswith(
        "application/json")
    xml_first = client.get("/iso15143/Fleet/1", headers={"Accept": "application/xml, application/json;q=0.9"})
    assert xml_first.headers["content-type"].startswith("application/xml")


def table_versions(conn) -> dict[str, str]:
    """Every table's rows with their physical place and inserting transaction: an insert, a delete or
    an update, even to the same values, changes them."""
    tables = [row[0] for row in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r'")]
    versions = {table: conn.execute(
        f"SELECT md5(coalesce(string_agg(ctid::text || ' ' || xmin::text || ' ' || t::text, '|' ORDER BY ctid), '')) "
        f"FROM {table} t").fetchone()[0] for table in tables}
    conn.commit()
    return versions


def test_the_fleet_snapshot_is_a_pure_read(iso, conn):
    """No table changes however often the snapshot is asked for, and the document is made in a read-only
    transaction; the running totals' time is the newest reading's."""
    from api import iso15143
    from ingest import queries

    server, client, alpha = iso
    before = table_versions(conn)
    for accept in ("application/json", "application/xml", "application/json"):
        assert client.get("/iso15143/Fleet/1", headers={"Accept": accept}).status_code == 200
    assert table_versions(conn) == before

    machines, total = queries.list_equipment(conn, offline_after_s=60, customer="alpha-corp", limit=100, offset=0)
    conn.commit()
    conn.read_only = True
    try:
        document = iso15143.fleet_document(conn, machines, total, 1, "http://iso.test/Fleet", datetime.now(UTC),
                                           oem_name="IronSight", tank_litres=400.0)
    finally:
        conn.rollback()
        conn.read_only = False
    [machine] = document["Equipment"]
    assert machine["FuelUsed"]["FuelConsumed"] == pytest.approx(47.6, abs=0.05)
    newest = conn.execute("SELECT max(ts) FROM readings WHERE equipment_id = 'ALPHA-1'").fetchone()[0]
    conn.commit()
    assert machine["CumulativeIdleHours"]["datetime"] == machine["FuelUsed"]["datetime"] == iso15143.stamp(newest)


def usage(totals: dict) -> tuple:
    return totals["through_ts"], [totals["idle_s"], totals["fuel_used_pct"]]


def test_an_upgraded_database_keeps_the_totals_it_had_counted(new_database, monkeypatch):
    """ingest's migration seeds the totals from api's usage_totals (through its newest reading counted)
    plus the readings stored since; a machine no snapshot had counted yet gets its whole history; api's
    migration then drops usage_totals."""
    import api
    import ingest
    from core import migrations
    from core.db import connect
    from ingest import queries
    from ironsight.schema import SCHEMA_PACKAGES

    moved = {(ingest.__name__, "0006_usage_totals"), (ingest.__name__, "0008_equipment_usage"),
             (api.__name__, "0004_drop_usage_totals")}
    discover_all = migrations.discover
    monkeypatch.setattr(migrations, "discover", lambda package, *, timescaledb: [
        m for m in discover_all(package, timescaledb=timescaledb) if (m.package, m.name) not in moved])
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    with connect(new_database("iso_upgrade")) as conn:
        migrations.apply_migrations(conn, SCHEMA_PACKAGES)
        register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme"),
                                  EquipmentRecord("EX-2", "S-2", "EX210", "excavator", "acme")])
        # What the old writer stored: readings a minute apart, idling, the tank dropping 1 % a minute,
        # and the latest state.
        for equipment_id, minutes, full in (("EX-1", 10, 50.0), ("EX-2", 5, 20.0)):
            for i in range(minutes):
                conn.execute("INSERT INTO readings (equipment_id, ts, engine_rpm, speed_kmh, fuel_level_pct) "
                             "VALUES (%s, %s, 800, 0, %s)", (equipment_id, t0 + timedelta(minutes=i), full - i))
            conn.execute("INSERT INTO equipment_state (equipment_id, last_ts, last_received_at, engine_rpm, "
                         "speed_kmh, fuel_level_pct) VALUES (%s, %s, now(), 800, 0, %s)",
                         (equipment_id, t0 + timedelta(minutes=minutes - 1), full - minutes + 1))
        # A snapshot had counted EX-1 through minute 5, with history its readings no longer hold.
        conn.execute("INSERT INTO usage_totals (equipment_id, through_ts, idle_s, fuel_used_pct, last_rpm, "
                     "last_speed_kmh, last_fuel_pct) VALUES ('EX-1', %s, 5000, 7.5, 800, 0, 45)",
                     (t0 + timedelta(minutes=5),))
        conn.commit()

        monkeypatch.undo()
        assert migrations.apply_migrations(conn, SCHEMA_PACKAGES) == [
            "ingest/0006_usage_totals", "ingest/0008_equipment_usage", "api/0004_drop_usage_totals"]
        totals = queries.usage_totals(conn, ["EX-1", "EX-2"])
        assert usage(totals["EX-1"]) == (t0 + timedelta(minutes=9), pytest.approx([5000 + 4 * 60.0, 7.5 + 4.0]))
        assert usage(totals["EX-2"]) == (t0 + timedelta(minutes=4), pytest.approx([4 * 60.0, 4.0]))
        assert conn.execute("SELECT to_regclass('usage_totals')").fetchone()[0] is None
        conn.commit()
        # The usage job continues from there.
        BatchWriter(conn, "upgraded", datetime.now(UTC)).write(Batch(messages=1, readings=[
            ("EX-1", Reading(ts=t0 + timedelta(minutes=10), engine_rpm=800.0, speed_kmh=0.0, fuel_level_pct=40.5))],
            sequences={"EX-1": [1]}))
        catch_up_usage(conn)
        assert usage(queries.usage_totals(conn, ["EX-1"])["EX-1"]) == (
            t0 + timedelta(minutes=10), pytest.approx([5000 + 5 * 60.0, 7.5 + 4.5]))


def test_paging_links_never_come_from_the_host_header(settings, conn):
    seed_tenant(conn, "alpha-corp", "ALPHA-1")
    for public_url, prefix in ((None, "/api/v1/iso15143/Fleet/"),
                               ("https://fleet.example.com/", "https://fleet.example.com/api/v1/iso15143/Fleet/")):
        server = ApiServer(settings.model_copy(update={"public_url": public_url}), settings.database_url)
        try:
            client = server.user("customer", customer="alpha-corp")
            body = client.get("/iso15143/Fleet/1", headers={"Host": "evil.example"}).json()
            assert all(link["href"].startswith(prefix) for link in body["Links"]), body["Links"]
        finally:
            server.close()
