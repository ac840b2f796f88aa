"""Remote command round trip: queued in the database → devices worker → broker → simulated
controller → ack → executed in the database, measured on real services.

Needs a migrated database and a broker (``IRONSIGHT_DATABASE_URL``, ``IRONSIGHT_MQTT_URL``). It
registers one machine under a fresh id and topic root, runs the devices worker and a simulated
controller in this process, sends ``--commands`` snapshot commands one after the other, and removes
the machine (and its commands) at the end. Round trip = ``finished_at - created_at`` as stored.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import connect  # noqa: E402
from core.register import EquipmentRecord, register_equipment  # noqa: E402
from core.settings import Settings  # noqa: E402
from device_sim.controller import SimulatedController  # noqa: E402
from device_sim.simulated_fleet import build_fleet  # noqa: E402
from devices import commands  # noqa: E402
from devices.worker import DevicesWorker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200)
    args = parser.parse_args()
    base = Settings()
    if not base.database_url or not base.mqtt_url:
        raise SystemExit("set IRONSIGHT_DATABASE_URL and IRONSIGHT_MQTT_URL")
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"topic_root": f"bench-{run}", "command_tick_s": 0.5})
    spec = build_fleet(1, fault_share=0.0, id_prefix=f"BENCH-{run}")[0]
    conn = connect(settings.database_url, application_name="ironsight-bench-commands")
    register_equipment(conn, [EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind, spec.customer)])
    stop = threading.Event()
    worker = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name=f"devices-bench-{run}")
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    controller = SimulatedController(spec, settings.mqtt_url, topic_root=settings.topic_root, interval_s=60).start()
    try:
        assert worker.connected.wait(10) and controller.connected.wait(10), "could not connect"
        time.sleep(1.0)  # the worker has seen the controller's status
        wall_ms = []
        for _ in range(args.commands):
            started = time.perf_counter()
            command = commands.create_command(conn, spec.equipment_id, "snapshot", {}, timeout_s=30,
                                              requested_by="bench", reason=None)
            while True:
                row = commands.get_command(conn, command["id"])
                conn.commit()
                if row["state"] in commands.FINAL_STATES:
                    break
                time.sleep(0.001)
            wall_ms.append((time.perf_counter() - started) * 1000)
            assert row["state"] == "executed", row
        stored_ms = [r[0] for r in conn.execute(
            "SELECT (extract(epoch FROM finished_at - created_at) * 1000)::float8 FROM commands "
            "WHERE equipment_id = %s",
            (spec.equipment_id,)).fetchall()]
        conn.commit()
        executions = controller.executions["snapshot"]
    finally:
        controller.stop()
        stop.set()
        thread.join(timeout=10)
        conn.execute("DELETE FROM equipment WHERE id = %s", (spec.equipment_id,))
        conn.commit()
        conn.close()

    def pct(values, q):
        return round(statistics.quantiles(values, n=100)[q - 1], 1)

    print(json.dumps({"commands": args.commands, "executed": executions,
                      "stored_round_trip_ms": {"p50": pct(stored_ms, 50), "p90": pct(stored_ms, 90),
                                               "p99": pct(stored_ms, 99), "max": round(max(stored_ms), 1)},
                      "polled_round_trip_ms_p50": pct(wall_ms, 50)}))


if __name__ == "__main__":
    main()
