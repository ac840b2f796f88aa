"""Diagnostics spread over processes: a worker killed mid-run, its shards resumed by the other,
every fault stored exactly once. Real processes (``ironsight diagnostics``) on the real database;
no timing is asserted, only the faults."""

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from core.register import EquipmentRecord, register_equipment
from core.shards import SHARD_COUNT, shard_of, shard_owners
from core.telemetry import FaultCode, Reading
from ingest.writer import Batch, BatchWriter
from tests.helpers import wait_for

MACHINES = 160
ROUNDS = 60
KILL_AFTER_ROUND = 25
STEP_S = 10
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
# Oil above the limit in rounds 10-17: OIL_OVERHEAT raised and cleared before the kill, so that a
# replay raising it again would show as a second episode.
OVERHEATING = range(0, MACHINES, 5)
WITH_DTC = range(3, MACHINES, 7)  # a J1939 code from round 30 on, after the kill: ENGINE_OIL_PRESSURE_LOW, once


def reading(machine: int, step: int) -> Reading:
    hot = machine in OVERHEATING and 10 <= step < 18
    codes = (FaultCode(100, 17, 1),) if machine in WITH_DTC and step >= 30 else ()
    # A live sensor always moves a little (the stuck-sensor rule knows that).
    return Reading(ts=T0 + timedelta(seconds=step * STEP_S), oil_temp_c=(112.0 if hot else 85.0) + (step % 3) * 0.1,
                   engine_rpm=1500.0 + (step % 4), lat=51.9, lon=4.1, fault_codes=codes)


def start_worker(database_url: str, name: str) -> subprocess.Popen:
    env = {**os.environ, "IRONSIGHT_DATABASE_URL": database_url, "IRONSIGHT_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "ironsight", "diagnostics", "--name", name], env=env)


def test_a_killed_workers_shards_resume_on_the_other_and_every_fault_is_stored_once(database_url, conn):
    ids = [f"TK-{i:03d}" for i in range(MACHINES)]
    assert len({shard_of(e) for e in ids}) > SHARD_COUNT // 2  # the fleet spreads over the shards
    register_equipment(conn, [EquipmentRecord(e, f"S-{e}", "EX210", "excavator", "acme") for e in ids])
    first, second = start_worker(database_url, "first"), start_worker(database_url, "second")
    try:
        def both_own_shards() -> bool:
            owners = shard_owners(conn, "diagnostics")
            conn.commit()
            return len(owners) == SHARD_COUNT and len(set(owners.values())) == 2

        wait_for(both_own_shards, timeout_s=60, what="two workers sharing every shard")
        writer = BatchWriter(conn, "test", datetime.now(UTC))
        for step in range(ROUNDS):
            batch = Batch(messages=MACHINES, sequences={e: [step] for e in ids})
            batch.readings = [(e, reading(i, step)) for i, e in enumerate(ids)]
            writer.write(batch)
            if step == KILL_AFTER_ROUND:
                wait_for(lambda: _faults(conn, ended=True).get("OIL_OVERHEAT", 0) == len(OVERHEATING), timeout_s=60,
                         what="the overheating episodes to end before the kill")
                first.send_signal(signal.SIGKILL)
                first.wait()

        def survivor_owns_everything() -> bool:
            owners = shard_owners(conn, "diagnostics")
            conn.commit()
            return len(owners) == SHARD_COUNT and set(owners.values()) != set() and len(set(owners.values())) == 1

        wait_for(survivor_owns_everything, timeout_s=60, what="the survivor to take the killed worker's shards")
        expected = {"OIL_OVERHEAT": len(OVERHEATING), "ENGINE_OIL_PRESSURE_LOW": len(WITH_DTC)}
        wait_for(lambda: _faults(conn) == expected, timeout_s=120, what=f"faults {expected}")
        # A clean stop checkpoints every shard at the last batch: nothing was left to replay.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.wait()

    assert _faults(conn) == expected
    events = conn.execute(
        """SELECT f.equipment_id, f.fault_code, count(*) FROM fault_events e JOIN faults f ON f.id = e.fault_id
           WHERE e.kind = 'raised' GROUP BY 1, 2""").fetchall()
    assert len(events) == len(OVERHEATING) + len(WITH_DTC) and all(n == 1 for _, _, n in events)
    assert {e for e, code, _ in events if code == "OIL_OVERHEAT"} == {ids[i] for i in OVERHEATING}
    started = conn.execute("SELECT equipment_id, started_at FROM faults WHERE fault_code = 'OIL_OVERHEAT'").fetchall()
    assert all(at == T0 + timedelta(seconds=10 * STEP_S) for _, at in started)
    newest = conn.execute("SELECT xid::text, id FROM accepted_batches ORDER BY xid DESC, id DESC LIMIT 1").fetchone()
    checkpoints = conn.execute(
        "SELECT last_xid::text, last_id, saved_by FROM shard_checkpoints WHERE consumer = 'diagnostics'").fetchall()
    assert len(checkpoints) == SHARD_COUNT
    assert {(xid, last_id) for xid, last_id, _ in checkpoints} == {newest}
    assert {saved_by for _, _, saved_by in checkpoints} == {"second"}


def _faults(conn, *, ended: bool = False) -> dict[str, int]:
    counts = dict(conn.execute("SELECT fault_code, count(*) FROM faults WHERE ended_at IS NOT NULL OR NOT %s "
                               "GROUP BY fault_code", (ended,)).fetchall())
    conn.commit()
    return counts
