"""bench/skab.py end to end on a small SKAB-shaped folder: the protocol, the calibration and the synthetic yardstick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HEADER = ["datetime", "Accelerometer1RMS", "Current", "Pressure", "Volume Flow RateRMS", "anomaly", "changepoint"]


def _write(path: Path, values: np.ndarray, labels: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = HEADER if labels is not None else HEADER[:-2]
    lines = [";".join(header)]
    for i, row in enumerate(values):
        cells = [f"2020-03-01 10:{i // 60 % 60:02d}:{i % 60:02d}"] + [f"{v:.4f}" for v in row]
        if labels is not None:
            cells += [f"{float(labels[i]):.1f}", "0.0"]
        lines.append(";".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rig(rng: np.random.Generator, rows: int) -> np.ndarray:
    return np.array([0.2, 2.0, 0.1, 32.0]) + rng.normal(0.0, [0.01, 0.3, 0.05, 0.4], size=(rows, 4))


def test_skab_bench_scores_a_clear_fault_and_reports_its_yardsticks(tmp_path):
    rng = np.random.default_rng(5)
    _write(tmp_path / "anomaly-free" / "anomaly-free.csv", _rig(rng, 2200), None)
    for group, n in (("valve1", 2), ("other", 1)):
        for k in range(n):
            x = _rig(rng, 1150)
            labels = np.zeros(len(x), dtype=bool)
            labels[570:970] = True
            x[570:970, 3] -= 3.0  # the flow drops by ~7 spreads while the valve is closed
            _write(tmp_path / group / f"{k}.csv", x, labels)

    run = subprocess.run([sys.executable, str(REPO / "bench" / "skab.py"), "--data", str(tmp_path), "--per-file",
                          "--calibrate", "--synthetic", "--setting", "threshold_factor=2.5"],
                         capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["files"] == 3 and summary["test_points"] == 3 * 750
    assert summary["f1"] > 0.9 and summary["far"] < 5.0
    assert summary["settings"]["threshold_factor"] == 2.5
    assert set(summary["calibration"]) == {"1.5", "2", "2.5", "3", "4", "5", "6", "8"}
    assert 0.0 < summary["synthetic"]["f1"] <= 1.0
    assert "IronSight (this run)" in run.stdout

    refused = subprocess.run([sys.executable, str(REPO / "bench" / "skab.py"), "--data", str(tmp_path),
                              "--setting", "windw=30"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "NAME=VALUE" in refused.stderr
