"""Loss seen and healed: gaps and duplicates in the controllers' sequence numbers (ingest.sequences),
the resend the devices worker asks for, and the simulated controller's store-and-forward buffer
answering it — on the real broker and database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading
from device_sim.controller import SimulatedController
from device_sim.simulated_fleet import build_fleet
from devices import commands, registry
from devices.worker import DevicesWorker
from ingest.sequences import RESTART_BELOW, SequenceState, fold_settled, ranges_of
from ingest.worker import IngestWorker
from ingest.writer import Batch, BatchWriter
from tests.helpers import ApiServer, wait_for

# --- the arithmetic ---


def test_runs_of_sequence_numbers_keep_repeats_in_their_run():
    assert ranges_of([5, 3, 4, 4, 9, 10, 1]) == [(1, 1, 1), (3, 5, 4), (9, 10, 2)]


def test_a_gap_is_found_healed_by_a_late_message_and_a_repeat_is_a_duplicate():
    state = SequenceState()
    state.fold([(1, 10, 10)], now=0)
    assert (state.high_seq, state.missing) == (10, [])  # the first number seen opens no gap
    state.fold([(15, 20, 6), (12, 12, 1)], now=1)
    assert state.missing == [[11, 11, 1, False], [13, 14, 1, False]] and (state.gaps, state.missed) == (0, 0)
    state.confirm(found_before=1)  # still open a settle time later: gaps
    assert (state.gaps, state.missed, state.missing_now, state.missing_since) == (2, 3, 3, 1)
    state.fold([(13, 13, 1), (5, 5, 1)], now=2)
    assert (state.healed, state.duplicates, state.missing_now) == (1, 1, 2)
    assert state.missing == [[11, 11, 1, True], [14, 14, 1, True]]
    state.fold([(11, 14, 5)], now=3)  # 11 and 14 heal; 12, 13 and one repeat are duplicates
    assert (state.healed, state.duplicates, state.missing_now, state.messages) == (3, 4, 0, 24)


def test_a_hole_filled_before_it_is_confirmed_was_only_a_message_committed_late():
    state = SequenceState()
    state.fold([(1, 1, 1), (3, 3, 1)], now=0)  # 2 is in another worker's batch, committed a moment later
    state.fold([(2, 2, 1)], now=1)
    state.confirm(found_before=1)
    assert (state.gaps, state.missed, state.healed, state.duplicates, state.missing) == (0, 0, 0, 0, [])


def test_a_counter_that_starts_again_loses_what_was_missing_and_counts_anew():
    state = SequenceState()
    state.fold([(1, 5000, 5000), (5003, 5003, 1)], now=0)
    state.confirm(found_before=0)
    assert state.missing_now == 2
    state.fold([(0, 2, 3)], now=1)  # far below the highest and in no gap: a restart
    assert (state.restarts, state.lost, state.missing_now, state.high_seq) == (1, 2, 0, 2)
    state.fold([(3, 4, 2)], now=2)
    assert (state.missed, state.duplicates, state.missing) == (2, 0, [])
    # Just below the highest is a repeat, not a restart.
    state.fold([(RESTART_BELOW + 10, RESTART_BELOW + 10, 1)], now=3)
    state.fold([(11, 11, 1)], now=4)
    assert state.restarts == 1


def test_a_jump_too_far_ahead_is_a_restart_not_a_million_missing_messages():
    state = SequenceState()
    state.fold([(1, 1, 1), (10**12, 10**12, 1)], now=0)
    assert (state.restarts, state.missed, state.high_seq) == (1, 0, 10**12)


def test_gaps_open_too_long_are_given_up_as_lost():
    state = SequenceState()
    state.fold([(1, 1, 1), (5, 5, 1)], now=100)
    state.fold([(7, 7, 1)], now=200)
    state.confirm(found_before=200)
    assert state.give_up(older_than=150) == 3
    assert (state.lost, state.missing) == (3, [[6, 6, 200, True]])


# --- through the writer and the job ---


def _reading(ts: datetime, hours: float | None = None) -> Reading:
    return Reading(ts=ts, oil_temp_c=80.0, engine_rpm=1500.0, engine_hours=hours)


def _batch(equipment_id: str, seqs: list[int], start: datetime) -> Batch:
    batch = Batch(messages=len(seqs))
    for seq in seqs:
        batch.readings.append((equipment_id, _reading(start + timedelta(seconds=seq))))
        batch.add_sequence(equipment_id, seq)
    return batch


@pytest.fixture
def writer(conn, database_url):
    register_equipment(conn, [EquipmentRecord(e, f"S-{e}", "EX210", "excavator", "acme") for e in ("SQ1", "SQ2")])
    conn.commit()
    with psycopg.connect(database_url) as own:
        yield BatchWriter(own, "seq-test", datetime.now(UTC), topic_root="t", late_window_s=6 * 3600)


def test_the_job_folds_what_the_writer_recorded_once_it_has_settled(writer, conn):
    start = datetime.now(UTC) - timedelta(minutes=5)
    writer.write(_batch("SQ1", [1, 2, 3, 7, 8], start))
    writer.write(_batch("SQ2", [40, 41], start))
    assert fold_settled(conn, settle_s=60).machines == 0  # not settled yet: another worker may hold 4-6
    result = fold_settled(conn, settle_s=0)
    assert (result.machines, result.gaps, result.missed) == (2, 1, 3)
    writer.write(_batch("SQ1", [5, 3], start))  # 5 arrives late; 3 is a redelivery
    result = fold_settled(conn, settle_s=0)
    assert (result.healed, result.duplicates) == (1, 1)
    row = conn.execute("SELECT missing_now, missing, messages, duplicates, healed FROM equipment_sequence "
                       "WHERE equipment_id = 'SQ1'").fetchone()
    assert row[0] == 2 and [g[:2] for g in row[1]] == [[4, 4], [6, 6]] and row[2:] == (7, 1, 1)
    assert conn.execute("SELECT count(*) FROM message_sequences").fetchone()[0] == 0

    # The common case moves on in the database alone; anything else is folded as above.
    writer.write(_batch("SQ2", [42, 43], start))
    writer.write(_batch("SQ2", [44], start))
    assert fold_settled(conn, settle_s=0).machines == 1
    # A hole in runs still young goes back once: its message is, nearly always, committed just after.
    writer.write(_batch("SQ2", [45, 47], start))
    time.sleep(0.6)
    assert fold_settled(conn, settle_s=0.5).machines == 0
    writer.write(_batch("SQ2", [46], start))
    time.sleep(0.6)
    assert fold_settled(conn, settle_s=0.5).machines == 1  # 45, 46, 47 in order
    writer.write(_batch("SQ2", [48, 50], start))
    assert fold_settled(conn, settle_s=0).missed == 1
    row = conn.execute("SELECT high_seq, messages, missed, missing FROM equipment_sequence WHERE equipment_id = 'SQ2'"
                       ).fetchone()
    assert row[:3] == (50, 10, 1) and [g[:2] for g in row[3]] == [[49, 49]]


def test_engine_hours_never_run_backwards_nor_faster_than_time(writer, conn):
    now = datetime.now(UTC).replace(microsecond=0)
    first = Batch(messages=1, readings=[("SQ1", _reading(now - timedelta(hours=1), 1000.0))])
    writer.write(first)
    backwards = Batch(messages=3, readings=[
        ("SQ1", _reading(now, 999.0)),  # later, lower: refused
        ("SQ1", _reading(now - timedelta(hours=4), 1.0)),  # earlier by 3 h, lower by 999 h: refused
        ("SQ1", _reading(now - timedelta(hours=2), 999.2)),  # earlier by 1 h, lower by 0.8 h: plausible
    ])
    result = writer.write(backwards)
    assert result.stored == 3 and result.dead_letters == 2
    assert {d.reason for d in result.refused_counters} == {"counter_implausible"}
    hours = dict(conn.execute("SELECT ts, engine_hours FROM readings WHERE equipment_id = 'SQ1'").fetchall())
    assert hours[now] is None and hours[now - timedelta(hours=4)] is None
    assert hours[now - timedelta(hours=2)] == pytest.approx(999.2)
    state = conn.execute("SELECT engine_hours FROM equipment_state WHERE equipment_id = 'SQ1'").fetchone()
    assert state[0] == 1000.0

    # Older than the late window (6 h here): stored as backlog, its hours not taken, no dead letter.
    late = writer.write(Batch(messages=1, readings=[("SQ1", _reading(now - timedelta(hours=30), 400.0))]))
    assert (late.stored, late.late, late.dead_letters) == (1, 1, 0)
    forward = writer.write(Batch(messages=1, readings=[("SQ1", _reading(now + timedelta(seconds=1), 1000.5))]))
    assert forward.dead_letters == 0  # a jump ahead is allowed (a meter can be set forward)


# --- end to end: broker, ingest, devices worker, controller ---


class LossyController(SimulatedController):
    """A controller whose link loses the first sending of the chosen sequence numbers (as a broker
    that drops queued messages does); a resend goes through."""

    def __init__(self, *args, lose: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lose = set(lose)

    def _transmit(self, seq: int, payload: bytes) -> None:
        if seq in self.lose:
            self.lose.discard(seq)
            return
        super()._transmit(seq, payload)


FAST = {"command_tick_s": 0.1, "sequence_settle_s": 0.5, "sequence_fold_every_s": 0.5, "resend_after_s": 0.5,
        "resend_retry_s": 2.0}


@pytest.fixture
def rig(settings, conn, background):
    settings = settings.model_copy(update=FAST)
    fleet = build_fleet(2, fault_share=0.0, id_prefix="SEQ")
    for spec in fleet:
        registry.create_device(
            conn, equipment=EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind, spec.customer,
                                            spec.site),
            equipment_id=spec.equipment_id, serial=f"CTL-{spec.equipment_id}", firmware=None, commissioned_on=None,
            report_interval_s=0.1)
    devices = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name="devices-seq")
    ingest = IngestWorker(settings, settings.database_url, settings.mqtt_url, name="ingest-seq")
    background.start(devices.run, "devices")
    background.start(ingest.run, "ingest")
    assert devices.connected.wait(10) and ingest.connected.wait(10)
    api = ApiServer(settings, settings.database_url)
    http = httpx.Client(base_url=api.url, timeout=10, headers=api.headers)
    yield settings, fleet, http
    http.close()
    api.close()


def test_lost_messages_are_found_asked_again_and_healed(rig, conn):
    settings, fleet, http = rig
    healthy_spec, lossy_spec = fleet
    lossy = LossyController(lossy_spec, settings.mqtt_url, topic_root=settings.topic_root, interval_s=0.1,
                            lose={5, 6, 7, 12})
    healthy = SimulatedController(healthy_spec, settings.mqtt_url, topic_root=settings.topic_root, interval_s=0.1)
    lossy.start()
    healthy.start()
    try:
        wait_for(lambda: lossy.seq >= 30, timeout_s=20, what="30 messages")
        healed = wait_for(
            lambda: (s := http.get(f"/api/v1/equipment/{lossy_spec.equipment_id}/sequence").json())["healed"] == 4
            and s, timeout_s=30, interval_s=0.2, what="the four lost messages resent and healed")
    finally:
        lossy.stop()
        healthy.stop()
    assert (healed["gaps"], healed["missed"], healed["missing_now"], healed["lost"]) == (2, 4, 0, 0)
    assert lossy.resent >= 4 and lossy.executions["resend"] >= 1
    # Every message is stored: no reading of the lossy controller is missing in the end.
    stored = conn.execute("SELECT count(*) FROM readings WHERE equipment_id = %s",
                          (lossy_spec.equipment_id,)).fetchone()[0]
    assert stored >= 30
    resend = conn.execute(
        "SELECT params, state, requested_by, result FROM commands WHERE equipment_id = %s AND kind = 'resend' "
        "ORDER BY created_at LIMIT 1", (lossy_spec.equipment_id,)).fetchone()
    assert resend[0]["ranges"][0] == [5, 7] and resend[2] == commands.RESEND_REQUESTER
    assert resend[1] == "executed" and resend[3]["unavailable"] == 0
    clean = http.get(f"/api/v1/equipment/{healthy_spec.equipment_id}/sequence").json()
    assert clean["messages"] > 0 and (clean["missed"], clean["gaps"]) == (0, 0)
    assert http.get("/api/v1/sequence-gaps").json()["count"] == 0


def test_messages_no_longer_buffered_stay_missing_and_are_shown(rig, conn):
    settings, fleet, http = rig
    spec = fleet[1]
    # A buffer of 2 messages: by the time the resend comes, the lost ones are long gone from it.
    lossy = LossyController(spec, settings.mqtt_url, topic_root=settings.topic_root, interval_s=0.1,
                            lose={4, 5}, resend_buffer_messages=2)
    lossy.start()
    try:
        answered = wait_for(lambda: conn.execute(
            "SELECT result FROM commands WHERE equipment_id = %s AND kind = 'resend' AND state = 'executed'",
            (spec.equipment_id,)).fetchone(), timeout_s=30, interval_s=0.2, what="a resend answered")
    finally:
        lossy.stop()
    conn.commit()
    assert answered[0] == {"resent": 0, "unavailable": 2}
    listed = http.get("/api/v1/sequence-gaps").json()
    assert listed["count"] == 1 and listed["data"][0]["equipment_id"] == spec.equipment_id
    assert listed["data"][0]["missing_now"] == 2 and listed["data"][0]["missing"][0]["first"] == 4
