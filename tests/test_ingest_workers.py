"""``ironsight ingest --workers N``: N processes share the subscription and stop together."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psutil

from core import topics
from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading, encode_message
from tests.helpers import Publisher, wait_for


def test_workers_share_the_load_and_stop_together(settings, conn):
    ids = [f"EX-{i}" for i in range(20)]
    register_equipment(conn, [EquipmentRecord(e, f"S-{e}", "EX210", "excavator", "acme") for e in ids])
    env = {**os.environ, "IRONSIGHT_DATABASE_URL": settings.database_url, "IRONSIGHT_MQTT_URL": settings.mqtt_url,
           "IRONSIGHT_TOPIC_ROOT": settings.topic_root, "IRONSIGHT_LOG_LEVEL": "WARNING"}
    group = subprocess.Popen([sys.executable, "-m", "ironsight", "ingest", "--workers", "2", "--name", "pair"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(psutil.Process(group.pid).children()) == 2, timeout_s=10, what="two workers")
        children = psutil.Process(group.pid).children()
        publisher = Publisher(settings.mqtt_url, f"{settings.topic_root}-pub")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

        def stats():
            rows = conn.execute("SELECT worker, readings_stored FROM ingest_stats ORDER BY worker").fetchall()
            conn.commit()
            return rows

        time.sleep(3.0)  # both connected and subscribed: a first subscription gets nothing sent before it
        sent = 0
        for _ in range(20):
            for e in ids:
                publisher.publish(topics.telemetry_topic(settings.topic_root, e),
                                  encode_message(sent, [Reading(ts=start + timedelta(seconds=sent), oil_temp_c=80.0)]))
                sent += 1
        publisher.close()
        wait_for(lambda: sum(n for _, n in stats()) == sent, timeout_s=20, what="every reading stored")
        assert [w for w, _ in stats()] == ["pair-1", "pair-2"]
    finally:
        group.send_signal(signal.SIGTERM)
        assert group.wait(20) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
