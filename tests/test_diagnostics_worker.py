"""The diagnostics worker on a real database: late backlogs, offline machines, restarts."""

from datetime import UTC, datetime, timedelta

from core.register import EquipmentRecord, SiteRecord, register_equipment, register_sites
from core.telemetry import Reading
from diagnostics.worker import DiagnosticsWorker
from ingest.writer import Batch, BatchWriter
from tests.helpers import drain_outbox

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def write(conn, temps, start, step_s=10, equipment_id="EX-1"):
    batch = Batch(messages=1, sequences={equipment_id: [1]})
    # A live sensor is never exactly constant (the stuck-sensor rule knows that): add its noise.
    batch.readings = [(equipment_id, Reading(ts=start + timedelta(seconds=i * step_s), oil_temp_c=t + (i % 3) * 0.05,
                                             lat=51.95, lon=4.14, engine_rpm=1800.0)) for i, t in enumerate(temps)]
    BatchWriter(conn, "test", datetime.now(UTC)).write(batch)


def drain(worker, conn):
    drain_outbox(worker.process_available, conn, "accepted_batches", worker.position)


def faults(conn):
    rows = conn.execute(
        "SELECT fault_code, started_at, ended_at, backfilled FROM faults ORDER BY started_at").fetchall()
    conn.commit()
    return rows


def setup(conn):
    register_sites(conn, [SiteRecord("port", 51.95, 4.14, 1000.0)])
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "port")])


def test_a_backlog_arriving_after_live_data_is_diagnosed_in_its_own_time(conn):
    setup(conn)
    worker = DiagnosticsWorker(conn.info.dsn)
    live_start = T0 + timedelta(hours=1)
    write(conn, [88.0] * 20, live_start)
    drain(worker, conn)
    assert faults(conn) == []
    # The controller's buffer from an hour earlier: 2 minutes at 112 °C, then normal again.
    write(conn, [90.0] * 3 + [112.0] * 12 + [90.0] * 12, T0)
    drain(worker, conn)
    assert worker.late_readings == 27
    assert faults(conn) == [("OIL_OVERHEAT", T0 + timedelta(seconds=30), T0 + timedelta(seconds=150), True)]
    kinds = [k for (k,) in conn.execute("SELECT kind FROM fault_events ORDER BY id")]
    assert kinds == ["raised", "cleared"]
    # Live state is where it was: the latest reading evaluated is still the live one.
    assert worker.engine.last_ts(["EX-1"])[0] == (live_start + timedelta(seconds=190)).timestamp()
    # The same backlog uploaded again stores nothing new, so nothing is diagnosed twice.
    write(conn, [90.0] * 3 + [112.0] * 12 + [90.0] * 12, T0)
    drain(worker, conn)
    assert len(faults(conn)) == 1


def test_a_backlog_overlapping_a_known_fault_adds_nothing(conn):
    setup(conn)
    worker = DiagnosticsWorker(conn.info.dsn)
    write(conn, [112.0] * 10, T0)  # a live fault, still open
    drain(worker, conn)
    assert [f[0] for f in faults(conn)] == ["OIL_OVERHEAT"]
    # Readings that fill a gap inside the open fault's time add no second episode.
    write(conn, [113.0] * 4, T0 + timedelta(seconds=5))
    drain(worker, conn)
    assert len(faults(conn)) == 1 and worker.late_readings == 4


def test_offline_raised_for_a_silent_machine_and_cleared_when_it_reports_again(conn):
    setup(conn)
    worker = DiagnosticsWorker(conn.info.dsn)
    write(conn, [88.0] * 3, datetime.now(UTC) - timedelta(seconds=30))
    drain(worker, conn)
    assert worker.check_offline(conn) == 0
    arrived_at = conn.execute("SELECT max(accepted_at) FROM accepted_batches").fetchone()[0]
    conn.commit()
    # Ten minutes of silence by the engine's clock.
    later = arrived_at + timedelta(minutes=10)
    assert worker.check_offline(conn, now=later) == 1
    assert worker.check_offline(conn, now=later) == 0  # raised once
    [(code, started_at, ended_at, _)] = faults(conn)
    assert code == "OFFLINE" and started_at == arrived_at + timedelta(seconds=120) and ended_at is None
    write(conn, [88.0], datetime.now(UTC))
    drain(worker, conn)
    assert faults(conn)[0][2] is not None
