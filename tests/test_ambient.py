"""Ambient air temperature (J1939 SPN 171), an optional channel: both codecs, its bounds, its storage,
the latest state and the hourly rollup on the real database."""

from datetime import UTC, datetime, timedelta

import pytest

from core import topics
from core.register import EquipmentRecord, register_equipment
from core.telemetry import CHANNEL_BOUNDS, Reading, decode_message, encode_message
from core.telemetry_binary import decode_binary, encode_binary
from ingest import queries
from ingest.worker import IngestWorker
from ingest.writer import Batch, BatchWriter
from tests.helpers import Publisher, wait_for

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# The example of docs/protocol.md, as the first controllers encode it: one reading at NOW with oil
# 86.43 °C and 1812.5 rpm, seq 7, presence 0x0003; no ambient temperature, whose bit 9 it predates.
OLD_BINARY = bytes.fromhex("01 07 01 000001a20846fe00 00 0003 21c3 46cd")


def reading(ts: datetime = NOW, **channels: float | None) -> Reading:
    values: dict[str, float | None] = dict(oil_temp_c=71.25, engine_rpm=1800.0, coolant_temp_c=84.5,
                                           ambient_temp_c=-12.37)
    return Reading(ts=ts, **{**values, **channels})


def decode_json(payload: bytes):
    return decode_message(payload, now=NOW, future_tolerance_s=300)


def decode_bin(payload: bytes):
    return decode_binary(payload, now=NOW, future_tolerance_s=300)


@pytest.mark.parametrize("ambient", [-12.37, 34.5, 0.0, None])
def test_both_codecs_carry_the_ambient_temperature_or_leave_it_out(ambient):
    sent = reading(ambient_temp_c=ambient)
    as_json = encode_message(1, [sent])
    assert (b'"ambient_temp_c"' in as_json) == (ambient is not None)
    assert decode_json(as_json).readings == [sent]

    as_binary = encode_binary(1, [sent])
    presence = int.from_bytes(as_binary[12:14], "big")
    assert bool(presence & 1 << 9) == (ambient is not None)
    got = decode_bin(as_binary).readings[0]
    assert got.ambient_temp_c == (None if ambient is None else pytest.approx(ambient, abs=0.005))
    # Two bytes in 0.01 °C, like the other temperatures.
    assert len(as_binary) == len(encode_binary(1, [sent._replace(ambient_temp_c=None)])) + (ambient is not None) * 2


def test_a_binary_payload_of_the_first_controllers_still_decodes():
    decoded = decode_bin(OLD_BINARY)
    assert decoded.rejected == []
    assert decoded.seq == 7
    [got] = decoded.readings
    assert got.ts == NOW and got.oil_temp_c == pytest.approx(86.43) and got.engine_rpm == pytest.approx(1812.5)
    assert got.ambient_temp_c is None and got.coolant_temp_c is None


def test_an_ambient_temperature_alone_is_a_reading():
    alone = Reading(ts=NOW, ambient_temp_c=21.5)
    assert decode_json(encode_message(1, [alone])).readings == [alone]
    assert decode_bin(encode_binary(1, [alone])).readings[0].ambient_temp_c == pytest.approx(21.5)


def test_the_bounds_are_what_air_can_be_and_beyond_them_the_reading_is_refused():
    assert CHANNEL_BOUNDS["ambient_temp_c"] == (-60.0, 70.0)
    for edge in (-60.0, 70.0):
        assert decode_json(encode_message(1, [reading(ambient_temp_c=edge)])).readings[0].ambient_temp_c == edge
    for beyond in (-60.01, 70.01, 120.0):
        bad, good = reading(ambient_temp_c=beyond), reading(NOW - timedelta(seconds=1))
        for decode, encode in ((decode_json, encode_message), (decode_bin, encode_binary)):
            decoded = decode(encode(1, [good, bad]))
            assert len(decoded.readings) == 1 and decoded.readings[0].ts == good.ts
            [rejected] = decoded.rejected
            assert (rejected.index, rejected.reason) == (1, "out_of_range")
            assert "ambient_temp_c" in rejected.detail
    body = b'{"v":1,"seq":1,"readings":[{"ts":"2026-11-23T12:00:00Z","ambient_temp_c":"warm"}]}'
    assert decode_json(body).rejected[0].reason == "bad_type"
    # A decoder that predates a presence bit refuses it, so an unknown channel is never misread.
    unknown = bytearray(encode_binary(1, [reading()]))
    unknown[12] |= 1 << 2  # bit 10
    assert decode_bin(bytes(unknown)).rejected[0].reason == "bad_binary"


@pytest.fixture
def ingesting(settings, conn, background):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    worker = IngestWorker(settings, settings.database_url, settings.mqtt_url, name="test-ingest")
    background.start(worker.run, "ingest")
    assert worker.connected.wait(10)
    publisher = Publisher(settings.mqtt_url, f"{settings.topic_root}-pub")
    yield publisher
    publisher.close()


def test_an_ambient_temperature_out_of_bounds_is_dead_lettered_and_a_good_one_stored(settings, conn, ingesting):
    now = datetime.now(UTC).replace(microsecond=0)
    root = settings.topic_root
    ingesting.publish(topics.telemetry_topic(root, "EX-1"),
                      encode_message(1, [reading(now - timedelta(seconds=2), ambient_temp_c=18.25),
                                         reading(now - timedelta(seconds=1), ambient_temp_c=71.0)]))
    ingesting.publish(topics.telemetry_topic(root, "EX-1", topics.TELEMETRY_BINARY),
                      encode_binary(2, [reading(now, ambient_temp_c=-61.0)]))

    def settled() -> bool:
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        conn.commit()
        return dead == 2 and stored == 1

    wait_for(settled, timeout_s=20, what="one reading stored and two dead-lettered")
    rows = conn.execute("SELECT reason, detail FROM dead_letters ORDER BY id").fetchall()
    assert [reason for reason, _ in rows] == ["out_of_range", "out_of_range"]
    assert all("ambient_temp_c" in detail for _, detail in rows)
    assert conn.execute("SELECT ambient_temp_c FROM readings").fetchone()[0] == pytest.approx(18.25)


def test_stored_kept_as_latest_state_and_rolled_up_hourly_like_the_other_averaged_channels(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    writer = BatchWriter(conn, "ambient", datetime.now(UTC))
    hour0 = datetime(2026, 7, 14, 10, tzinfo=UTC)
    # Two and a half hours, a reading a minute, the air warming 0.1 °C a minute; every 7th reading
    # without it (an older controller's message, say), which the averages must leave out.
    readings = [reading(hour0 + timedelta(minutes=i), ambient_temp_c=None if i % 7 == 3 else 20.0 + 0.1 * i)
                for i in range(150)]
    for seq, first in enumerate(range(0, len(readings), 40), start=1):
        writer.write(Batch(messages=1, readings=[("EX-1", r) for r in readings[first:first + 40]],
                           sequences={"EX-1": [seq]}))

    stored = conn.execute("SELECT ts, ambient_temp_c FROM readings WHERE equipment_id = 'EX-1' ORDER BY ts").fetchall()
    assert [(ts, value and round(value, 2)) for ts, value in stored] == [
        (r.ts, r.ambient_temp_c and round(r.ambient_temp_c, 2)) for r in readings]
    assert conn.execute("SELECT ambient_temp_c FROM equipment_state WHERE equipment_id = 'EX-1'").fetchone()[0] == (
        pytest.approx(readings[-1].ambient_temp_c))

    hourly = conn.execute("SELECT hour, ambient_temp_c_sum, ambient_temp_c_n, samples FROM readings_hourly "
                          "WHERE equipment_id = 'EX-1' ORDER BY hour").fetchall()
    assert [h for h, *_ in hourly] == [hour0, hour0 + timedelta(hours=1), hour0 + timedelta(hours=2)]
    for hour, total, n, samples in hourly:
        values = [r.ambient_temp_c for r in readings if hour <= r.ts < hour + timedelta(hours=1)
                  and r.ambient_temp_c is not None]
        assert n == len(values) < samples
        assert total == pytest.approx(sum(values), abs=1e-3)

    start, end = hour0 + timedelta(minutes=30), hour0 + timedelta(minutes=150)
    from_rollups = queries.readings(conn, "EX-1", start, end, timedelta(hours=1), 100)
    from_readings = queries.readings(conn, "EX-1", start, end, timedelta(hours=1), 100, rollups=False)
    assert [r["ambient_temp_c"] for r in from_rollups] == pytest.approx(
        [r["ambient_temp_c"] for r in from_readings], abs=1e-4)
    assert from_rollups[1]["ambient_temp_c"] == pytest.approx(20.0 + 0.1 * 89.5, abs=0.05)
    raw = queries.readings(conn, "EX-1", hour0, hour0 + timedelta(minutes=5), None, 10)
    assert [r["ambient_temp_c"] for r in raw][:2] == pytest.approx([20.0, 20.1])
