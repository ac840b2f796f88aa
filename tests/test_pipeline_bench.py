"""bench/pipeline.py end to end on a tiny fleet: the whole path runs, every injected fault is raised
once with its alarm (and its ticket where the severity opens one), and the JSON has what the goals
are checked against. Timing is not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("readings_per_s_stored", "readings_per_s_diagnosed", "diagnosis_lag_p50_s", "diagnosis_lag_p99_s",
        "diagnosis_lag_max_s", "fault_latency_p50_s", "fault_latency_p99_s", "alarm_latency_p50_s",
        "alarm_latency_p99_s", "ticket_latency_p99_s", "faults_expected", "faults_raised", "faults_missed",
        "faults_duplicated", "false_faults", "cores_under_load", "msg_rate", "readings_per_msg", "controllers",
        "diagnostics_workers", "duration_s")


def _environment(server_database_url: str) -> dict[str, str]:
    env = {**os.environ, "IRONSIGHT_DATABASE_URL": server_database_url}
    env.pop("IRONSIGHT_MQTT_URL", None)
    if os.environ.get("IRONSIGHT_TEST_MQTT_URL"):
        env["IRONSIGHT_MQTT_URL"] = os.environ["IRONSIGHT_TEST_MQTT_URL"]
    return env


def test_pipeline_bench_raises_every_injected_fault_once(server_database_url, tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pipeline.py"), "--controllers", "50", "--duration", "10",
         "--msg-rate", "50", "--fault-share", "0.1", "--load-processes", "1", "--drain-timeout", "30"],
        env=_environment(server_database_url), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(key in result for key in KEYS), sorted(set(KEYS) - set(result))
    assert result["faults_expected"] == 5 and result["faults_raised"] == 5, result
    assert result["faults_missed"] == result["faults_duplicated"] == result["false_faults"] == 0, result
    assert result["alarms_missed"] == 0 and result["tickets_missed"] == 0 and result["tickets_expected"] > 0
    assert result["readings_lost"] == 0 and result["readings_acked"] > 0
    assert {"ingest", "diagnostics", "alarms", "api", "load"} <= set(result["cores_under_load"])
    assert "faults:" in run.stdout  # the summary before the JSON line
