"""The multivariate detector on synthetic machine data generated here (no SKAB files needed).

The healthy process: five signals at 1 Hz driven by one slowly varying operating point (a
2-minute cycle plus a random walk), four of them correlated with it, the fifth (supply voltage)
pure noise. 400 rows train, 1,000 rows are scored.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from diagnostics.offline.csv_report import diagnose_csv, write_diagnosis_csv
from diagnostics.offline.detector import DetectorSettings, MultivariateDetector, StreamState

N_TRAIN, N_TEST = 400, 1000
NAMES = ["flow", "pressure", "temperature", "current", "voltage"]
LOADING = np.array([1.0, 0.9, -0.7, 0.5, 0.0])
NOISE = np.array([0.2, 0.2, 0.3, 0.3, 1.0])
OFFSET = np.array([50.0, 20.0, 80.0, 3.0, 230.0])
EPISODE = slice(N_TRAIN + 500, N_TRAIN + 800)  # where faults are injected (test rows 500..799)


def healthy(seed: int = 0, n: int = N_TRAIN + N_TEST) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    walk = np.zeros(n)
    steps = rng.normal(0.0, 0.1, n)
    for i in range(1, n):
        walk[i] = 0.98 * walk[i - 1] + steps[i]
    latent = 1.5 * np.sin(2 * np.pi * t / 120) + walk
    x = OFFSET + latent[:, None] * LOADING + rng.normal(0.0, 1.0, (n, len(NAMES))) * NOISE
    return x, latent


def fitted(x: np.ndarray) -> MultivariateDetector:
    return MultivariateDetector().fit(x[:N_TRAIN], NAMES)


def test_healthy_process_is_not_flagged():
    for seed in range(3):
        x, _ = healthy(seed)
        scores, flags = fitted(x).score_predict(x[N_TRAIN:])
        assert flags.mean() <= 0.01, f"seed {seed}: {flags.mean():.1%} of healthy rows flagged"
        assert np.median(scores) < 0.2


def test_shift_in_one_signal_is_flagged_and_explained():
    x, _ = healthy(1)
    det = fitted(x)
    y = x.copy()
    shift = 4 * x[:N_TRAIN, 3].std()  # current steps up by 4 of its healthy spreads
    y[EPISODE, 3] += shift
    scores, flags = det.score_predict(y[N_TRAIN:])
    assert flags[520:800].mean() >= 0.9  # detected within 20 s and held
    assert flags[:500].mean() == 0.0 and flags[830:].mean() <= 0.02  # and released after it ends
    explanation = det.explain(y[N_TRAIN:], index=650)
    assert explanation[0].feature == "current"
    assert explanation[0].z > 1  # in (widened) spreads of its deviation; the correlation does the rest
    assert explanation[0].observed - explanation[0].expected > shift / 3
    assert sum(c.contribution for c in explanation) == pytest.approx(scores[650])


def test_single_signal_test_catches_a_shift_the_averaged_norm_dilutes():
    # the supply voltage, uncorrelated with the rest, sags by 1.75 of its raw spreads (~5.5 spreads of
    # its 10-row mean): averaged over five signals the norm barely notices, the single-signal test does
    with_test, norm_only = [], []
    for seed in range(4):
        x, _ = healthy(seed)
        y = x.copy()
        y[EPISODE, 4] -= 1.75 * x[:N_TRAIN, 4].std()
        det = fitted(x)
        flags = det.predict(y[N_TRAIN:])
        assert flags[:500].mean() == 0.0 and flags[830:].mean() == 0.0
        with_test.append(flags[520:800].mean())
        norm_only.append(MultivariateDetector(DetectorSettings(univariate=False)).fit(x[:N_TRAIN], NAMES)
                         .predict(y[N_TRAIN:])[520:800].mean())
    assert np.mean(with_test) >= 0.7 and np.mean(with_test) > np.mean(norm_only) + 0.2
    assert all(a >= b for a, b in zip(with_test, norm_only, strict=True))

    det = fitted(x)
    off = MultivariateDetector(DetectorSettings(univariate=False)).fit(x[:N_TRAIN], NAMES)
    assert np.isfinite(det.univariate_threshold) and off.univariate_threshold == np.inf
    for d in (det, off):  # both persist; the switched-off test as JSON null
        again = MultivariateDetector.from_dict(json.loads(json.dumps(d.to_dict())))
        assert np.array_equal(again.score(y[N_TRAIN:]), d.score(y[N_TRAIN:]))
    # the score is the larger of the two tests, each over its own threshold
    state = det.new_state()
    for row in y[N_TRAIN:N_TRAIN + 650]:
        score, _ = det.update(state, row)
    z = state.last_z
    norm = float(z @ det.precision @ z) / len(z) / det.threshold
    assert score == pytest.approx(max(norm, float(np.max(z**2)) / det.univariate_threshold))
    explanation = det.explain(state=state)
    assert explanation[0].feature == "voltage"
    assert sum(c.contribution for c in explanation) == pytest.approx(score)


def test_broken_correlation_is_flagged_though_each_signal_stays_in_range():
    x, latent = healthy(0)
    det = fitted(x)
    y = x.copy()
    rng = np.random.default_rng(7)
    # pressure now moves against the operating point: same range, relationship reversed
    y[EPISODE, 1] = OFFSET[1] - LOADING[1] * latent[EPISODE] + rng.normal(0.0, NOISE[1], 300)
    assert x[:N_TRAIN, 1].min() - 0.5 < y[EPISODE, 1].min() and y[EPISODE, 1].max() < x[:N_TRAIN, 1].max() + 0.5
    scores, flags = det.score_predict(y[N_TRAIN:])
    assert flags[:500].mean() == 0.0
    assert flags[500:800].mean() >= 0.25
    peak = 500 + int(np.argmax(scores[500:800]))
    assert scores[peak] > 3
    explanation = det.explain(y[N_TRAIN:], index=peak)
    assert explanation[0].feature == "pressure"
    assert all(abs(c.z) < 3 for c in explanation)  # no single signal is out of its range


def test_slow_drift_is_flagged():
    x, _ = healthy(2)
    det = fitted(x)
    y = x.copy()
    # temperature creeps away from where the operating point puts it: 8 spreads over 500 s
    y[N_TRAIN:, 2] += np.clip(np.arange(N_TEST) - 300, 0, None) * (8 * x[:N_TRAIN, 2].std() / 500)
    flags = det.predict(y[N_TRAIN:])
    assert flags[:300].mean() == 0.0
    assert flags[-100:].mean() == 1.0
    assert det.explain(y[N_TRAIN:], index=N_TEST - 1)[0].feature == "temperature"


def test_streaming_one_reading_at_a_time_equals_batch_and_survives_a_restart():
    x, _ = healthy(3)
    y = x.copy()
    y[EPISODE, 0] -= 3.0
    y[N_TRAIN + 100, 4] = np.nan  # a missing reading
    det = fitted(y)
    batch_scores, batch_flags = det.score_predict(y[N_TRAIN:])
    assert batch_flags.any()

    streamed = [det.score_stream(row) for row in y[N_TRAIN:]]
    assert np.array_equal(np.array(streamed), batch_scores)

    state = det.new_state()
    half = N_TEST // 2 + 50  # inside the episode
    first = [det.update(state, row) for row in y[N_TRAIN:N_TRAIN + half]]
    saved = json.loads(json.dumps(state.to_dict()))  # the live engine persists this per machine
    resumed = StreamState.from_dict(saved)
    rest = [det.update(resumed, row) for row in y[N_TRAIN + half:]]
    scores = np.array([s for s, _ in first + rest])
    flags = np.array([f for _, f in first + rest])
    assert np.array_equal(scores, batch_scores) and np.array_equal(flags, batch_flags)
    assert det.explain(state=resumed)[0].feature == det.explain(y[N_TRAIN:], index=-1)[0].feature


def test_to_dict_from_dict_round_trip_scores_identically():
    x, _ = healthy(4)
    y = x.copy()
    y[EPISODE, 2] += 2.0
    det = fitted(x)
    data = json.loads(json.dumps(det.to_dict()))
    assert data["features"] == NAMES and data["training_rows"] == N_TRAIN and data["version"] == 2
    assert data["settings"]["window"] == 10
    again = MultivariateDetector.from_dict(data)
    a_scores, a_flags = det.score_predict(y[N_TRAIN:])
    b_scores, b_flags = again.score_predict(y[N_TRAIN:])
    assert np.array_equal(a_scores, b_scores) and np.array_equal(a_flags, b_flags)
    with pytest.raises(ValueError):
        MultivariateDetector.from_dict({**data, "version": 99})


def test_fit_rejects_bad_training_data():
    x, _ = healthy(5)
    with pytest.raises(ValueError):
        MultivariateDetector().fit(x[:20], NAMES)  # too few rows
    with pytest.raises(ValueError):
        MultivariateDetector().fit(x[:N_TRAIN], NAMES[:3])
    bad = x[:N_TRAIN].copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError):
        MultivariateDetector().fit(bad, NAMES)
    with pytest.raises(RuntimeError):
        MultivariateDetector().score(x)


def test_diagnose_csv_scores_every_row_after_training(tmp_path):
    x, _ = healthy(6, n=600)
    x[450:550, 0] -= 3.0
    path = tmp_path / "log.csv"
    with path.open("w") as fh:
        fh.write("time;flow;pressure;temperature;current;voltage;state\n")
        for i, row in enumerate(x):
            cells = [f"{v:.4f}" for v in row]
            if i == 480:
                cells[1] = ""  # a missing pressure reading
            fh.write(f"2024-05-01T10:{i // 60:02d}:{i % 60:02d};" + ";".join(cells) + ";running\n")

    rows = list(diagnose_csv(path, train_rows=300, time_column="time", sep=";"))
    assert len(rows) == 300
    assert all(list(r) == ["time", "score", "anomaly"] for r in rows)
    assert rows[0]["time"] == "2024-05-01T10:05:00"
    assert {r["anomaly"] for r in rows} == {0, 1}
    assert sum(r["anomaly"] for r in rows[150:250]) >= 80 and sum(r["anomaly"] for r in rows[:150]) == 0

    out = io.StringIO()
    assert write_diagnosis_csv(path, out, train_rows=300, time_column="time", sep=";") == 300
    lines = out.getvalue().splitlines()
    assert lines[0] == "time;score;anomaly" and len(lines) == 301
    assert lines[1].startswith("2024-05-01T10:05:00;") and lines[1].split(";")[2] in {"0", "1"}

    no_time = list(diagnose_csv(path, train_rows=300, sep=";"))  # the time column is then ignored
    assert list(no_time[0]) == ["score", "anomaly"] and len(no_time) == 300
    with pytest.raises(ValueError):
        list(diagnose_csv(path, train_rows=600, time_column="time", sep=";"))
    with pytest.raises(ValueError):
        list(diagnose_csv(path, train_rows=300, time_column="timestamp", sep=";"))
