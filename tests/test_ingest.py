"""Ingest against the real broker and database: good data stored once, bad data dead-lettered."""

import json
import struct
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core import topics
from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading, encode_message
from ingest.worker import IngestWorker
from tests.helpers import Publisher, wait_for


@pytest.fixture
def ingesting(settings, conn, background):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme"),
                              EquipmentRecord("EX-2", "S-2", "EX210", "excavator", "acme")])
    worker = IngestWorker(settings, settings.database_url, settings.mqtt_url, name="test-ingest")
    background.start(worker.run, "ingest")
    assert worker.connected.wait(10)
    publisher = Publisher(settings.mqtt_url, f"{settings.topic_root}-pub")
    yield worker, publisher
    publisher.close()


def reading(ts: datetime, oil: float = 80.0) -> Reading:
    return Reading(ts=ts, oil_temp_c=oil, engine_rpm=1500.0, lat=51.9, lon=4.1, engine_hours=10.0)


def count(conn, query, *params):
    value = conn.execute(query, params).fetchone()[0]
    conn.commit()
    return value


def test_bad_payloads_become_dead_letters_and_good_readings_in_between_are_all_stored(settings, conn, ingesting):
    worker, publisher = ingesting
    topic = topics.telemetry_topic(settings.topic_root, "EX-1")
    now = datetime.now(UTC).replace(microsecond=0)
    future = (now + timedelta(days=2)).isoformat()
    # (Oversized payloads are the broker's to refuse, message_size_limit: tests/test_hostile_payloads.py.)
    hostile = [
        (topic, b"this is not json", "not_json"),
        (topic, b"\x00\x01\x02\xff", "not_json"),
        (topic, b'"just a string"', "not_an_object"),
        (topic, json.dumps({"v": 1, "seq": "one", "readings": [{"ts": now.isoformat(), "oil_temp_c": 1}]}).encode(),
         "bad_seq"),
        (topic, json.dumps({"v": 1, "seq": 1}).encode(), "no_readings"),
        (topic, b'{"v":1,"seq":1,"readings":[{"ts":"%s","oil_temp_c":NaN}]}' % now.isoformat().encode(), "not_json"),
        (topic, json.dumps({"v": 1, "seq": 1, "readings": [{"ts": future, "oil_temp_c": 80}]}).encode(),
         "ts_in_future"),
        (topic, json.dumps({"v": 1, "seq": 1, "readings": [{"ts": now.isoformat(), "oil_temp_c": "hot"}]}).encode(),
         "bad_type"),
        (topic, json.dumps({"v": 1, "seq": 1, "readings": [{"ts": now.isoformat(), "engine_rpm": -5}]}).encode(),
         "out_of_range"),
        (topics.telemetry_topic(settings.topic_root, "NOBODY-9"), encode_message(1, [reading(now)]),
         "unknown_equipment"),
        (f"{settings.topic_root}/v1/bad id/telemetry", encode_message(1, [reading(now)]), "bad_topic"),
        (topic, json.dumps({"v": 9, "seq": 1, "readings": [{"ts": now.isoformat(), "oil_temp_c": 1}]}).encode(),
         "unsupported_version"),
    ]
    good_count = 0
    for i, (bad_topic, payload, _) in enumerate(hostile):
        good_ts = now - timedelta(seconds=100 - i)
        publisher.publish(topic, encode_message(i + 1, [reading(good_ts)]))
        good_count += 1
        publisher.publish(bad_topic, payload)
    publisher.publish(topic, encode_message(99, [reading(now)]))
    good_count += 1

    expected_reasons = sorted(reason for _, _, reason in hostile)
    wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters") >= len(hostile), timeout_s=20,
             what="dead letters")
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM dead_letters").fetchall())
    assert reasons == expected_reasons
    wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE equipment_id = 'EX-1'") == good_count,
             timeout_s=20, what="good readings")
    assert count(conn, "SELECT count(*) FROM dead_letters WHERE payload_bytes > 0 AND reason IS NOT NULL") == len(
        hostile)
    assert worker.dead_letters.by_reason["not_json"] == 3
    assert count(conn, "SELECT readings_stored FROM ingest_stats WHERE worker = 'test-ingest'") == good_count


def test_a_message_with_one_bad_reading_keeps_the_good_ones(settings, conn, ingesting):
    _, publisher = ingesting
    now = datetime.now(UTC)
    body = {"v": 1, "seq": 5, "readings": [
        {"ts": (now - timedelta(seconds=3)).isoformat(), "oil_temp_c": 81.0},
        {"ts": (now - timedelta(seconds=2)).isoformat(), "oil_temp_c": "x"},
        {"ts": (now - timedelta(seconds=1)).isoformat(), "oil_temp_c": 83.0},
    ]}
    publisher.publish(topics.telemetry_topic(settings.topic_root, "EX-2"), json.dumps(body).encode())
    wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE equipment_id = 'EX-2'") == 2, timeout_s=20,
             what="two good readings")
    wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters") == 1, timeout_s=10, what="one dead letter")
    row = conn.execute("SELECT reason, detail, equipment_id FROM dead_letters").fetchone()
    assert row == ("bad_type", "reading 1: oil_temp_c='x'", "EX-2")


def test_redelivered_and_overlapping_messages_are_stored_once_and_latest_state_follows_time(
        settings, conn, ingesting):
    _, publisher = ingesting
    topic = topics.telemetry_topic(settings.topic_root, "EX-1")
    now = datetime.now(UTC)
    batch = [reading(now - timedelta(seconds=60 - s), oil=70.0 + s) for s in range(50)]
    payload = encode_message(1, batch)
    publisher.publish(topic, payload)
    publisher.publish(topic, payload)  # a controller retry of the same message
    publisher.publish(topic, encode_message(2, batch[25:]))  # an overlapping store-and-forward upload
    # A late, older reading must not move the latest state backwards.
    publisher.publish(topic, encode_message(3, [reading(now - timedelta(hours=1), oil=20.0)]))
    wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE equipment_id = 'EX-1'") == 51, timeout_s=20,
             what="51 distinct readings")
    wait_for(lambda: count(conn, "SELECT last_seq FROM equipment_state WHERE equipment_id = 'EX-1'") == 3,
             timeout_s=10, what="state update")
    oil, last_ts = conn.execute(
        "SELECT oil_temp_c, last_ts FROM equipment_state WHERE equipment_id = 'EX-1'").fetchone()
    assert oil == pytest.approx(119.0)
    newest = batch[-1].ts
    assert last_ts == newest.replace(microsecond=newest.microsecond // 1000 * 1000)  # sent with ms precision
    assert count(conn, "SELECT coalesce(sum(readings), 0) FROM accepted_batches") == 51
    assert count(conn, "SELECT readings_duplicate FROM ingest_stats") == 75


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_stored(settings, conn, ingesting):
    worker, publisher = ingesting
    # Stand-in for any value the schema cannot hold: the database itself refuses 99.5 °C.
    conn.execute("ALTER TABLE readings ADD CONSTRAINT refuse_for_test CHECK (oil_temp_c <> 99.5)")
    conn.commit()
    try:
        topic = topics.telemetry_topic(settings.topic_root, "EX-1")
        now = datetime.now(UTC)
        for i, oil in enumerate([80.0, 99.5, 81.0, 82.0]):
            publisher.publish(topic, encode_message(i + 1, [reading(now - timedelta(seconds=10 - i), oil=oil)]))
        wait_for(lambda: count(conn, "SELECT count(*) FROM readings") == 3, timeout_s=20, what="three readings")
        wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters") == 1, timeout_s=10, what="a dead letter")
        assert conn.execute("SELECT reason FROM dead_letters").fetchone()[0] == "refused_by_database"
        assert worker.dead_letters.by_reason == {"refused_by_database": 1}
    finally:
        conn.rollback()
        conn.execute("ALTER TABLE readings DROP CONSTRAINT refuse_for_test")
        conn.commit()


def test_binary_telemetry_is_stored_like_json_and_bad_binary_is_dead_lettered(settings, conn, ingesting):
    from core.telemetry_binary import encode_binary

    _, publisher = ingesting
    binary_topic = topics.telemetry_topic(settings.topic_root, "EX-2", topics.TELEMETRY_BINARY)
    now = datetime.now(UTC).replace(microsecond=0)
    publisher.publish(binary_topic, encode_binary(1, [reading(now - timedelta(seconds=s), oil=80.0 + s)
                                                      for s in range(5)]))
    publisher.publish(binary_topic, b"\x01\x01\x01garbage")
    wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE equipment_id = 'EX-2'") == 5, timeout_s=20,
             what="five binary readings")
    wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters") == 1, timeout_s=10, what="a dead letter")
    assert conn.execute("SELECT reason FROM dead_letters").fetchone()[0] == "bad_binary"
    oil = [r[0] for r in conn.execute("SELECT oil_temp_c FROM readings WHERE equipment_id = 'EX-2' ORDER BY ts")]
    assert oil == pytest.approx([84.0, 83.0, 82.0, 81.0, 80.0])


def test_both_codecs_arrive_through_the_fallback_broker_too(database_url, conn, background, tmp_path):
    """The iotcore (rumqttd) broker that ``ironsight run`` falls back to without Mosquitto."""
    from core.settings import Settings
    from core.telemetry_binary import encode_binary
    from ironsight.embedded_broker import start_embedded_broker

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    broker = start_embedded_broker(tmp_path / "broker", prefer="iotcore")
    try:
        settings = Settings(database_url=database_url, mqtt_url=broker.url, topic_root="fallback")
        worker = IngestWorker(settings, database_url, broker.url, name="fallback")
        background.start(worker.run, "ingest")
        assert worker.connected.wait(10)
        publisher = Publisher(broker.url, "fallback-pub")
        now = datetime.now(UTC).replace(microsecond=0)
        publisher.publish(topics.telemetry_topic("fallback", "EX-1"), encode_message(1, [reading(now, oil=80.0)]))
        publisher.publish(topics.telemetry_topic("fallback", "EX-1", topics.TELEMETRY_BINARY),
                          encode_binary(2, [reading(now - timedelta(seconds=1), oil=81.0)]))
        publisher.close()
        wait_for(lambda: count(conn, "SELECT count(*) FROM readings") == 2, timeout_s=20, what="both readings")
    finally:
        broker.stop()


# --- Running usage totals (idle time, fuel used), caught up from the stored readings (ingest.usage) ---

HOUR0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def usage_reading(ts: datetime, rpm: float | None, fuel: float | None, speed: float | None = 0.0) -> Reading:
    return Reading(ts=ts, engine_rpm=rpm, fuel_level_pct=fuel, speed_kmh=speed)


def as_stored(value: float) -> float:
    """A channel as the readings table keeps it (float4)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def expected_usage(batches: list[list[Reading]]) -> tuple[float, float, datetime]:
    """docs/iso15143.md, batch by batch in commit order: idle seconds, fuel used (% of the tank) and
    the newest reading counted. A reading not newer than the newest one stored before its batch is late."""
    idle = fuel = 0.0
    last: Reading | None = None
    for batch in batches:
        for r in sorted((r for r in batch if last is None or r.ts > last.ts), key=lambda r: r.ts):
            if last is not None:
                if last.engine_rpm is not None and 300 <= last.engine_rpm < 1200 and (last.speed_kmh or 0) < 1:
                    idle += min((r.ts - last.ts).total_seconds(), 300.0)
                if last.fuel_level_pct is not None and r.fuel_level_pct is not None:
                    fuel += max(as_stored(last.fuel_level_pct) - as_stored(r.fuel_level_pct), 0.0)
            last = r
    assert last is not None
    return idle, fuel, last.ts


def stored_usage(conn, equipment_id: str) -> tuple[float, float, datetime]:
    """The totals once the usage job has caught up (nothing left to settle: the readings are old)."""
    from ingest import queries, usage

    usage.catch_up(conn, settle_s=0)
    totals = queries.usage_totals(conn, [equipment_id])[equipment_id]
    conn.commit()
    return totals["idle_s"], totals["fuel_used_pct"], totals["through_ts"]


def assert_usage(actual: tuple[float, float, datetime], expected: tuple[float, float, datetime]) -> None:
    """The same idle seconds and fuel used (to float precision), through the same reading."""
    assert actual[2] == expected[2]
    assert actual[:2] == pytest.approx(expected[:2], rel=1e-9, abs=1e-9)


def write(writer, equipment_id: str, readings: list[Reading], seq: int) -> None:
    from ingest.writer import Batch

    writer.write(Batch(messages=1, readings=[(equipment_id, r) for r in readings], sequences={equipment_id: [seq]}))


def test_usage_totals_are_exact_across_batch_boundaries_and_a_late_reading_is_not_added(conn):
    from ingest.writer import BatchWriter

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme"),
                              EquipmentRecord("EX-2", "S-2", "EX210", "excavator", "acme")])
    # A minute apart: idling (800 rpm) for 10 minutes, working (1800 rpm) for 10, at idle speed but
    # moving (so working) for 5, idling, with a 20-minute gap after the 28th reading; the tank drops
    # 0.2 % a minute and is refilled once (not subtracted); one reading carries no fuel level.
    day: list[Reading] = []
    for i in range(30):
        rpm = 800.0 if i < 10 else 1800.0 if i < 20 else 800.0
        speed = 3.0 if 20 <= i < 25 else 0.0
        fuel = None if i == 12 else 60.0 - 0.2 * i + (30.0 if i >= 15 else 0.0)
        day.append(usage_reading(HOUR0 + timedelta(minutes=i if i < 28 else i + 20), rpm, fuel, speed))
    writer = BatchWriter(conn, "usage", datetime.now(UTC))
    # The same readings in one batch (EX-2) and in four, split anywhere (EX-1): the same totals.
    write(writer, "EX-2", day, 1)
    for seq, part in enumerate((day[:1], day[1:11], day[11:12], day[12:]), start=1):
        write(writer, "EX-1", part, seq)
    idle, fuel, through = stored_usage(conn, "EX-1")
    assert_usage((idle, fuel, through), stored_usage(conn, "EX-2"))
    # Idle: the first ten readings' ten minutes, none while working or moving, then a minute each for
    # readings 26, 27 and 29, and the gap after reading 28 capped at five minutes.
    assert idle == pytest.approx((10 + 3 + 5) * 60.0)
    # Fuel: 29 steps of 0.2 % but for the two next to the reading without a level and the refill.
    assert fuel == pytest.approx(0.2 * 26, abs=1e-4)
    assert_usage((idle, fuel, through), expected_usage([day]))

    # A late reading (older than the newest stored) is stored but not added, alone or beside new ones.
    late = usage_reading(HOUR0 + timedelta(minutes=3, seconds=30), 800.0, 10.0)
    write(writer, "EX-1", [late], 5)
    assert stored_usage(conn, "EX-1") == (idle, fuel, through)
    mixed = [usage_reading(HOUR0 + timedelta(minutes=5, seconds=30), 800.0, 5.0),
             usage_reading(through + timedelta(minutes=1), 800.0, 42.0),
             usage_reading(through + timedelta(minutes=2), 800.0, 41.0)]
    write(writer, "EX-1", mixed, 6)
    assert_usage(stored_usage(conn, "EX-1"), expected_usage([day, [late], mixed]))
    # The newest stored reading idled on until the first new one, which idled on until the next.
    assert stored_usage(conn, "EX-1")[0] == pytest.approx(idle + 2 * 60.0)
    assert count(conn, "SELECT count(*) FROM readings WHERE equipment_id = 'EX-1'") == len(day) + 4


def test_a_redelivered_batch_adds_only_the_readings_it_stores(conn):
    from ingest.writer import BatchWriter

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    writer = BatchWriter(conn, "usage", datetime.now(UTC))
    first = [usage_reading(HOUR0 + timedelta(minutes=i), 800.0, 50.0 - i) for i in range(5)]
    write(writer, "EX-1", first, 1)
    # Redelivered with one new reading, which repeats itself inside the batch with another level: the
    # batch is written with ON CONFLICT, and only the reading stored counts, with its stored values.
    again = [*first, usage_reading(HOUR0 + timedelta(minutes=5), 800.0, 44.0),
             usage_reading(HOUR0 + timedelta(minutes=5), 800.0, 30.0)]
    write(writer, "EX-1", again, 2)
    stored_fuel = count(conn, "SELECT fuel_level_pct FROM readings WHERE equipment_id = 'EX-1' AND ts = %s",
                        HOUR0 + timedelta(minutes=5))
    assert_usage(stored_usage(conn, "EX-1"), (5 * 60.0, 4.0 + (46.0 - stored_fuel), HOUR0 + timedelta(minutes=5)))
    assert count(conn, "SELECT readings_duplicate FROM ingest_stats WHERE worker = 'usage'") == 6


def test_one_usage_job_runs_at_a_time_and_a_reading_is_counted_once_it_settles(database_url, conn):
    from ingest import usage
    from ingest.writer import BatchWriter

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    writer = BatchWriter(conn, "usage", datetime.now(UTC))
    old = [usage_reading(HOUR0 + timedelta(minutes=i), 800.0, 50.0 - i) for i in range(10)]
    write(writer, "EX-1", old, 1)
    with psycopg.connect(database_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (usage._LOCK_KEY,))
        assert usage.catch_up(conn, settle_s=0) == 0  # another worker's job is running: this one leaves
        conn.commit()
    assert usage.catch_up(conn, settle_s=0) == 1
    assert usage.catch_up(conn, settle_s=0) == 0  # nothing new: nothing counted twice
    assert_usage(stored_usage(conn, "EX-1"), expected_usage([old]))
    # A reading of a moment ago may still have company on its way: it waits until it settles.
    recent = usage_reading(datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5), 800.0, 30.0)
    write(writer, "EX-1", [recent], 2)
    usage.catch_up(conn, settle_s=60)
    conn.commit()
    from ingest import queries

    assert queries.usage_totals(conn, ["EX-1"])["EX-1"]["through_ts"] == old[-1].ts
    conn.commit()
    assert stored_usage(conn, "EX-1")[2] == recent.ts
