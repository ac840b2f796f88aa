"""The learned oil-temperature model: fit, judge, persist, train from the database."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.register import EquipmentRecord, register_equipment
from device_sim.machine import SimulatedMachine
from device_sim.simulated_fleet import build_fleet
from diagnostics.engine import EquipmentEngine
from diagnostics.models import MODEL_SPECS, OIL_MODEL_KIND, PRESSURE_MODEL_KIND, ResidualModel, fit_model
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import EquipmentContext, ModelResidual, Sample
from diagnostics.training import load_active_models, train
from ingest.writer import Batch, BatchWriter

START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
CHANNELS = ("oil_temp_c", "engine_rpm", "hydraulic_pressure_bar", "coolant_temp_c", "lat", "lon", "engine_hours")


def simulate(spec, seconds, step_s=2.0, start=START, seed=3):
    machine = SimulatedMachine(spec, start, seed=seed)
    out = []
    for i in range(int(seconds / step_s)):
        machine.advance(step_s)
        reading = machine.reading(start + timedelta(seconds=(i + 1) * step_s))
        out.append((reading.ts, {c: getattr(reading, c) for c in CHANNELS}, reading))
    return machine, out


def test_the_model_stays_quiet_on_healthy_operation_and_flags_failing_cooling_early():
    spec = build_fleet(1, fault_share=1.0, seed=4, faults=("oil_cooler_clogged",))[0]
    spec = replace(spec, fault_after_s=7200.0)
    machine, series = simulate(spec, 7200 + 600)
    history = [(ts, values) for ts, values, _ in series[:1800]]  # the first hour
    model = fit_model([history])
    assert 0.1 <= model.residual_spread < 2.0 and model.samples > 1000
    rule = ModelResidual("oil_temp_model", "OIL_TEMP_ABOVE_EXPECTED")
    ctx = EquipmentContext("EX-1", spec.model, models={OIL_MODEL_KIND: model})
    state, raised = {}, []
    for ts, values, _ in series:
        for change in rule.evaluate(state, Sample(ts, values), ctx):
            raised.append((ts, change))
    assert len(raised) == 1, [(ts, c.kind) for ts, c in raised]
    detected_at, change = raised[0]
    assert change.kind == "raised" and timedelta(0) < detected_at - machine.fault_started_at < timedelta(minutes=3)
    assert change.evidence["value"] - change.evidence["expected"] > 5.0


def test_an_operating_point_the_model_never_saw_is_not_judged():
    spec = build_fleet(1, fault_share=0.0, seed=5)[0]
    _, series = simulate(spec, 3600)
    model = fit_model([[(ts, values) for ts, values, _ in series]])
    typical = model.mean
    assert model.knows(typical)
    assert not model.knows([x * 3 for x in typical])
    assert ResidualModel.from_dict(model.to_dict()) == model


def test_train_from_the_database_and_load_the_machines_own_model(conn):
    spec = build_fleet(1, fault_share=0.0, seed=6)[0]
    register_equipment(conn, [EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind, "acme")])
    start = datetime.now(UTC) - timedelta(hours=3)
    _, series = simulate(spec, 2.5 * 3600, start=start)
    batch = Batch(messages=1, sequences={spec.equipment_id: [1]}, readings=[(spec.equipment_id, r) for *_, r in series])
    BatchWriter(conn, "test", datetime.now(UTC)).write(batch)

    trained = train(conn, since=start, until=datetime.now(UTC))
    # Each kind of model, for the machine and for its equipment model.
    assert sorted((t.kind, t.equipment_id or "") for t in trained) == sorted(
        (kind, owner) for kind in MODEL_SPECS for owner in (spec.equipment_id, ""))
    models = load_active_models(conn, [spec.equipment_id])
    assert set(models[spec.equipment_id]) == set(MODEL_SPECS)
    own = models[spec.equipment_id][OIL_MODEL_KIND]
    assert own.samples == next(t.samples for t in trained if t.equipment_id and t.kind == OIL_MODEL_KIND)
    assert models[spec.equipment_id][PRESSURE_MODEL_KIND].samples < own.samples  # working time only
    train(conn, since=start, until=datetime.now(UTC))  # a retrain replaces, it does not add
    active = conn.execute("SELECT count(*) FROM diagnostic_models WHERE active").fetchone()[0]
    assert active == 2 * len(MODEL_SPECS)
    assert conn.execute("SELECT count(*) FROM diagnostic_models").fetchone()[0] == 4 * len(MODEL_SPECS)


def test_the_diagnosis_is_revised_as_evidence_accumulates():
    engine = EquipmentEngine(rulebook_for("EX210"), EquipmentContext("EX-1", "EX210"))
    t = START
    changes = []
    for i in range(60):
        # Oil over its limit; the coolant, normal at first, heats up after a minute.
        coolant = 86.0 if i < 12 else 104.0
        values = {"oil_temp_c": 112.0 + (i % 3) * 0.1, "coolant_temp_c": coolant + (i % 2) * 0.2,
                  "engine_rpm": 1800.0 + (i % 4), "lat": 51.9, "lon": 4.1}
        changes += engine.feed(Sample(t + timedelta(seconds=5 * i), values))
    oil = [c for c in changes if c.fault_code == "OIL_OVERHEAT"]
    assert [c.kind for c in oil] == ["raised", "updated"]
    assert oil[0].diagnosis["causes"][0]["id"] == "oil_cooler_clogged"
    assert oil[1].diagnosis["causes"][0]["id"] == "radiator_clogged"
