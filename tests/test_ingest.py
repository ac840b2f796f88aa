"""Ingest against the real broker and database: good data stored once, bad data dead-lettered."""

import json
from datetime import UTC, datetime, timedelta

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
        (topic, b'{"v":1,"seq":1,"readings":[' + b'{"ts":"x"},' * 30000 + b'{}]}', "payload_too_large"),
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
