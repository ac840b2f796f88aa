"""Loss benchmark: a broker that drops, and what IronSight sees and heals of it.

Mosquitto with its default settings keeps at most 1,000 queued QoS 1 messages per client and drops
the rest without telling anyone, although it has acknowledged them to the publisher. Here it runs on
a free port with exactly those defaults. ``--controllers`` simulated controllers (device_sim's, each
its own MQTT session, with a store-and-forward buffer of its latest messages) report every
``--interval`` seconds to one ingest worker. After ``--warm`` seconds the ingest worker stalls
(SIGSTOP: its connection stays up, it stops reading) for ``--stall`` seconds, so the broker's queue
for it overflows; then it goes on, and the controllers keep reporting for ``--after`` seconds.

Phase 1, detection: no devices worker runs, so nothing is asked again. Once ingest has drained, the
controllers' own counts give the truth: ``dropped`` = published − stored. The sequence job's
``missed`` must equal it.
Phase 2, healing: the devices worker starts and asks every machine with a gap to resend it; the
controllers answer from their buffers. ``recovered`` = stored at the end − stored after phase 1 −
messages published meanwhile; every dropped message is still in the buffers, so all must come back.

Uses IRONSIGHT_DATABASE_URL when set (an embedded PostgreSQL otherwise); the broker is always its
own. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, services  # noqa: E402
from core.register import EquipmentRecord  # noqa: E402
from device_sim.controller import SimulatedController  # noqa: E402
from device_sim.simulated_fleet import build_fleet  # noqa: E402
from devices import registry  # noqa: E402
from ironsight.embedded_broker import find_mosquitto  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between a controller's messages")
    parser.add_argument("--warm", type=float, default=10.0)
    parser.add_argument("--stall", type=float, default=15.0, help="seconds the ingest worker stops reading")
    parser.add_argument("--after", type=float, default=10.0)
    parser.add_argument("--heal-timeout", type=float, default=300.0)
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    with (tempfile.TemporaryDirectory() as work, services(Path(".ironsight-bench").resolve()) as (server_url, _, _),
          fresh_database(server_url, f"ironsight_loss_{run_id}") as database_url):
        broker, mqtt_url = _default_mosquitto(Path(work))
        processes: list[subprocess.Popen] = [broker]
        controllers: list[SimulatedController] = []
        try:
            topic_root = f"loss-{run_id}"
            fleet = build_fleet(args.controllers, fault_share=0.0, id_prefix="L")
            with psycopg.connect(database_url) as conn:
                for spec in fleet:
                    registry.create_device(
                        conn, equipment=EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind,
                                                        spec.customer, spec.site),
                        equipment_id=spec.equipment_id, serial=f"CTL-{spec.equipment_id}", firmware=None,
                        commissioned_on=None, report_interval_s=args.interval)
            env = {**os.environ, "IRONSIGHT_DATABASE_URL": database_url, "IRONSIGHT_MQTT_URL": mqtt_url,
                   "IRONSIGHT_TOPIC_ROOT": topic_root, "IRONSIGHT_LOG_LEVEL": "WARNING",
                   "IRONSIGHT_SEQUENCE_SETTLE_S": "3", "IRONSIGHT_RESEND_AFTER_S": "2",
                   "IRONSIGHT_RESEND_RETRY_S": "15", "IRONSIGHT_RESEND_ATTEMPTS": "5",
                   "IRONSIGHT_COMMAND_TIMEOUT_S": "120"}
            ingest = subprocess.Popen([sys.executable, "-m", "ironsight", "ingest", "--name", "loss-1"], env=env,
                                      stdout=subprocess.DEVNULL)
            processes.append(ingest)
            time.sleep(3.0)

            controllers = [SimulatedController(spec, mqtt_url, topic_root=topic_root, interval_s=args.interval,
                                               seed=i + 1) for i, spec in enumerate(fleet)]
            for controller in controllers:
                controller.start()
            deadline = time.monotonic() + 60
            while not all(c.connected.is_set() for c in controllers) and time.monotonic() < deadline:
                time.sleep(0.2)
            started = time.monotonic()
            time.sleep(args.warm)
            _signal_tree(ingest.pid, signal.SIGSTOP)
            time.sleep(args.stall)
            _signal_tree(ingest.pid, signal.SIGCONT)
            time.sleep(args.after)
            for controller in controllers:
                controller.hold_reports()
            load_s = time.monotonic() - started
            published = sum(c.seq for c in controllers)

            # Phase 1: what was dropped, and what the sequence numbers say.
            stored = _wait_until_still(database_url)
            sequence = _wait_for_settled_counts(database_url, published)
            dropped = published - stored
            detection = {"published": published, "stored": stored, "dropped": dropped,
                         "missed": sequence["missed"], "gaps": sequence["gaps"], "duplicates": sequence["duplicates"],
                         "machines_with_gaps": sequence["machines"]}
            print(json.dumps({"phase": "detection", **detection}), flush=True)

            # Phase 2: the devices worker asks for the gaps again; the controllers answer from their buffers.
            healing_started = time.monotonic()
            devices = subprocess.Popen([sys.executable, "-m", "ironsight", "devices"], env=env,
                                       stdout=subprocess.DEVNULL)
            processes.append(devices)
            healed = _wait_for_healed(database_url, args.heal_timeout)
            heal_s = time.monotonic() - healing_started
            final_stored = _wait_until_still(database_url)
            after = _sequence_counts(database_url)
            with psycopg.connect(database_url) as conn:
                resends = conn.execute("SELECT count(*), count(*) FILTER (WHERE state = 'executed') FROM commands "
                                       "WHERE kind = 'resend'").fetchone()
            result = {
                **detection,
                "detected_share": round(sequence["missed"] / dropped, 4) if dropped else None,
                "recovered": final_stored - stored,
                "recovered_share": round((final_stored - stored) / dropped, 4) if dropped else None,
                "final_stored": final_stored,
                "still_missing": after["missing_now"],
                "lost": after["lost"],
                "healed": after["healed"],
                "heal_s": round(heal_s, 1),
                "healed_in_time": healed,
                "resend_commands": resends[0], "resend_executed": resends[1],
                "resent_by_controllers": sum(c.resent for c in controllers),
                "controllers": args.controllers, "interval_s": args.interval, "load_s": round(load_s, 1),
                "stall_s": args.stall, "offered_msg_per_s": round(published / load_s, 1),
                "broker": "mosquitto, default settings (max_queued_messages 1000)",
                "at": datetime.now(UTC).isoformat(),
            }
            print(json.dumps(result))
        finally:
            for controller in controllers:
                controller.stop()
            for process in reversed(processes):
                _signal_tree(process.pid, signal.SIGCONT)
                process.terminate()
            for process in processes:
                process.wait(15)


def _default_mosquitto(work: Path) -> tuple[subprocess.Popen, str]:
    """A Mosquitto with nothing but a listener: every other setting is the default."""
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed: this benchmark measures its default queue limit")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = work / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"mqtt://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the default mosquitto did not start")


def _signal_tree(pid: int, signum: int) -> None:
    try:
        parent = psutil.Process(pid)
        for process in [parent, *parent.children(recursive=True)]:
            process.send_signal(signum)
    except psutil.Error:
        pass


def _stored(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def _wait_until_still(database_url: str, quiet_s: float = 5.0, timeout_s: float = 300.0) -> int:
    """The number of stored readings once it has not moved for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            stored = _stored(conn)
            if stored != last:
                last, since = stored, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
            time.sleep(0.5)
    return last


def _sequence_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("""SELECT coalesce(sum(messages), 0), coalesce(sum(missed), 0), coalesce(sum(gaps), 0),
                                     coalesce(sum(duplicates), 0), coalesce(sum(healed), 0), coalesce(sum(lost), 0),
                                     coalesce(sum(missing_now), 0), count(*) FILTER (WHERE missing_now > 0),
                                     (SELECT count(*) FROM message_sequences)
                              FROM equipment_sequence""").fetchone()
    keys = ("messages", "missed", "gaps", "duplicates", "healed", "lost", "missing_now", "machines", "unfolded")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def _wait_for_settled_counts(database_url: str, published: int, timeout_s: float = 120.0) -> dict[str, int]:
    """The sequence counts once every stored message has been folded."""
    deadline = time.monotonic() + timeout_s
    counts = _sequence_counts(database_url)
    while time.monotonic() < deadline and (counts["unfolded"] or counts["messages"] + counts["missed"] < published):
        time.sleep(1.0)
        counts = _sequence_counts(database_url)
    return counts


def _wait_for_healed(database_url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = _sequence_counts(database_url)
        if counts["missing_now"] == 0 and not counts["unfolded"]:
            return True
        time.sleep(1.0)
    return False


if __name__ == "__main__":
    main()
