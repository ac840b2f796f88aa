"""SKAB: our multivariate detector on real pump test-rig data, under the published protocol.

Runs ``diagnostics.offline.detector.MultivariateDetector`` on the Skoltech Anomaly Benchmark (a water
circulation rig with a pump, 8 sensors at 1 Hz; see SOURCE.md beside the data) and prints the
published outlier-detection leaderboard with our row inserted in rank order. The last line is one
JSON object: ``f1``, ``far``, ``mar``, ``files``, ``test_points`` and more.

Protocol (as published): every labelled file (valve1/, valve2/, other/; not anomaly-free.csv);
per file the first 400 rows train (assumed normal: ``other/2.csv`` in fact has an anomaly in them,
kept as is), the rest is the test part; no shuffling; features are all sensor columns; point-wise
metrics pooled over all test parts: F1 = TP/(TP+(FN+FP)/2), FAR = FP/(FP+TN)*100,
MAR = FN/(FN+TP)*100. Each file gets its own model fitted on its 400 training rows; the test rows
are then fed in order, exactly as the live engine feeds readings (the score of row t uses rows
<= t only).

How each setting was chosen (no setting was tuned on the test parts' labels)
----------------------------------------------------------------------------
- 10-row smoothing window, 300-row reference time constant, threshold at a multiple of the 0.99
  quantile of the training scores (for the multivariate norm and, separately, for the largest
  single-signal squared deviation), 95 % confidence for the small-sample widening of each signal's
  spread, 0.99 quantile for "settled" after an episode, 60-row cap on re-learning, Ledoit-Wolf
  shrinkage on every 10th training row: fixed from first principles (see the constants in
  diagnostics/offline/detector.py for the reasons).
- Threshold factor 2.5: chosen on healthy data only. anomaly-free.csv (9,405 healthy rows, not
  part of the protocol's files) is cut into 17 pseudo-experiments (starts every 500 rows, 400 rows
  train + the next 750 scored, as in the protocol), and the factor is the smallest of
  1.5, 2, 2.5, 3, 4, 5, 6, 8 whose flagged fraction stays <= 5 % (half the 10 % FAR goal); with
  the single-signal test (variant 11) 2.0 flags 8.2 % and 2.5 flags 4.3 %, so 2.5 stays.
  ``--calibrate`` reruns this and prints the table.

How the method came about (in the open)
---------------------------------------
Eight variants of the detector were run on this protocol while designing it (three more below),
and for several of them the per-file results (false alarms before/after the labelled episode,
detection delay) and the signal traces of some test files around their labelled episodes were
looked at, to understand failure modes. What was seen, and the general mechanism that answered it:
  - variant 1: a local-level Kalman reference whose drift was estimated from the training rows
    tracked everything within seconds (F1 0.73, FAR 20 %) -> a fixed, slow reference (300 s),
    frozen during episodes;
  - variant 2: scaling deviations by the raw spread instead of the smoothed one missed most
    faults (0.60, 11 %);
  - variants 3-6: false alarms that latched after an episode, because the rig came back slightly
    differently -> the return-to-normal rule with re-learning. Variants 3-5 carried a unit bug
    (a growing reference uncertainty in the wrong units); variant 6, the bug fixed, scored
    0.81 at 13 % with a factor of 3 fixed up front, a factor that flags 14 % of the healthy rows
    (the 5 % budget would have needed 8);
  - variants 7-8: false alarms from engine-temperature swings that 400 training rows do not show
    -> the small-sample widening of each signal's spread (0.72, 6.3 %), then re-learning that
    ends when the readings have settled instead of after a fixed 30 s (variant 8).
Threshold factors were fixed up front (2, an absolute 1, then 3) until variant 7; variants 7-11
take theirs from the healthy-data budget above. The widening was kept because it gave a better
false-alarm/recall trade-off on synthetic faults injected into anomaly-free.csv (no test labels
involved). No setting was picked because it scored better on the test labels, and this version
is not the best-scoring one (variant 6 had a higher F1 at a higher FAR, and breaks the budget).

Second round (variants 9-11), aimed at recall inside the long labelled segments. Per-file results
and signal traces of some test files were looked at (again to understand, not to pick numbers):
the valve faults show mainly as a drop of the volume flow, often of only 1-3 raw spreads, which
the norm divided by 8 signals dilutes; the flow only drops ~45-60 s after a labelled segment
starts and is back ~45 s before it ends; and the anomaly-free recording (flow ~120-127 instead of
~32 in the labelled files) itself shows healthy flow dips and a thermocouple warm-up ramp.
  - variant 9 (run before this round): hysteresis alone, an episode clears
    only below 0.5 x threshold (0.5 fixed up front): F1 0.7247, FAR 8.18 % - more false alarms,
    no recall;
  - variant 10: the single-signal test (below) plus a two-sided per-signal CUSUM on the same
    deviations, allowance = each signal's 0.99 training quantile of |z|, alarm level =
    factor x allowance x max(window, the deviation's integrated autocorrelation time), capped at
    2x the alarm level, reset when an episode closes. With the alarm level factor x allowance x
    window (no autocorrelation term) no factor of the ladder met the healthy budget (factor 8 still
    flagged 5.6 %: a CUSUM episode opened by a drifting thermocouple never closes, the frozen
    reference making the drift look larger); the autocorrelation term (a CUSUM integrates drift,
    not noise, when deviations stay correlated longer than its horizon) brought factor 4 to 3.7 %,
    so 4 was used: F1 0.7341, FAR 6.87 %, MAR 38.6 %. The CUSUM then reacts too slowly to matter
    and was removed (no gain over variant 11, extra persisted state);
  - variant 11 (this one): the single-signal test alone: the score is the larger of the norm over
    its threshold and the largest single-signal z^2 over its own threshold (the same factor x the
    0.99 training quantile). Factor 2.5 from the budget (4.3 %): F1 0.7342, FAR 6.98 %, MAR 38.5 %.
Not tried, and why: holding an episode open for a fixed time after the readings return (the labels
outlast the flow drop by ~45 s) - any hold length would come from looking at the test labels.

Third round (variants 12-18 and three combinations, ten runs), aimed at the healthy false alarms
that force the threshold up and at the files the detector misses entirely. Every variant keeps the
rest of variant 11 and takes its factor from the same healthy-data rule (smallest factor of the
ladder with <= 5 % of the anomaly-free pseudo-experiment rows flagged); no other setting was added.
What was looked at: the signal traces of the files (with their labelled segments), which signal
dominated the flagged rows of the healthy pseudo-experiments (at factor 2: thermocouple 481 rows,
flow 329, the accelerometers 231 - the thermocouple in anomaly-free.csv is a steady warm-up ramp,
which a weighted-mean reference lags by slope x time constant), and the score traces of two missed
files.
  - variant 12, per-signal single-signal thresholds (each signal's own 0.99 training quantile of
    z^2 instead of one quantile of the largest z^2): the healthy rows need factor 6 (4.3 %;
    2.5 flags 10.1 %): F1 0.7138, FAR 6.02 %, MAR 41.6 %;
  - variant 13, the single-signal test on the *conditional* deviation, (P z)_j^2 / P_jj with P the
    precision matrix (the standardised residual of a regression of each signal on all the others:
    the cross-sensor residual, with no new fitted parameters): factor 4 (3.2 %): F1 0.7253,
    FAR 5.29 %, MAR 40.5 %; with per-signal thresholds as in 12, factor 8 (4.6 %): 0.6919, 6.14 %,
    44.3 %;
  - variant 14, re-learning rows after an episode flagged as part of it (the episode lasts until
    the readings have settled, by the existing settle rule; no hold length): factor 2.5 (4.3 %):
    F1 0.7415, FAR 8.30 %, MAR 36.9 %; with variant 12: factor 6, 0.7218, 7.25 %, 40.0 %;
  - variant 15, Brown's double exponential smoothing as the reference (2*m1 - m2, same 300 s
    time constant: follows a linear trend without lag): the healthy rows get much quieter (factor
    1.5 flags 4.8 %, against 12.2 % before), but the labelled files do not follow: F1 0.7645 at
    FAR 13.08 %, MAR 31.1 % - over the 10 % limit, so not admissible (the healthy recording's
    monotone warm-up is the case the double smoothing fits best; the labelled files' swings are
    not ramps). With variant 14 too: 0.7694 at 15.0 %;
  - variant 16, 15 + 13: factor 2.5 (3.7 %): F1 0.7396, FAR 8.28 %, MAR 37.1 %;
    variant 17, 15 + 12: factor 3 (3.8 %): 0.7556 at FAR 11.12 % (over the limit);
    variant 18, 15 + 13 + 14: factor 2.5 (3.75 %): 0.7465, FAR 9.64 %, MAR 35.5 %.
Three variants (14, 16, 18) beat variant 11 within the FAR limit, by 0.005-0.012 of F1, each paying
1.3-2.7 points of FAR. To choose among them without the test labels they were compared on
synthetic faults injected into the anomaly-free pseudo-experiments (each signal in turn shifted by
2 and 3 of its raw training spreads, up and down, 30-row ramp, 350 rows, at test row 200): F1
0.3528 (variant 11), 0.3528 (14), 0.3698 (16), 0.3697 (18). Variant 16 was implemented in
detector.py, and it failed the detector's own synthetic test
(test_single_signal_test_catches_a_shift_the_averaged_norm_dilutes): a moderate shift that
keeps the episode flickering is partly learned between its openings, the trend term learns its
slope too, and when the shift ends the reference overshoots - 19 % of the rows after the episode
flagged for one of the four seeds. A gain of 0.005 F1, picked among the ten runs of this round
scored on the same labels, is within what that choice alone can produce, so it was not worth a new
false-alarm failure mode and a change to the persisted state: detector.py stays at variant 11.
Variant 14 (the best F1 of the admissible ones) was not adopted either: it is better on the
labels but no better on the synthetic faults, and adopting it would rest on the test labels alone.
Also considered and not tried: a robust fit against a training window that
holds a start-up transient or a step (other/13.csv: the flow goes from ~25 to ~125 inside the
training rows, so its spread is ~170 and the later drop to ~0 is never seen; other/4.csv: a
2-unit flow step in training). The median/MAD fixes tried on paper fail with a drifting reference
(its deviations stay contaminated for a time constant after the step), so this needs a reference
that skips flagged training rows, i.e. a second pass - for a later round.

Fourth round (the smoothing window), with the synthetic-fault yardstick now built in
(``--synthetic``; variants are run with ``--setting NAME=VALUE``). The flow of the missed valve
files is white noise in training (its one-row change is as large as its spread), and their fault
moves it by only 1-3 raw spreads: a longer mean cuts such noise by sqrt(window), so the window was
the one setting left whose effect on small sustained shifts is predictable from first principles.
Each window got its factor from the same healthy-data rule; synthetic F1 / SKAB F1, FAR:
  window 10 (factor 2.5): 0.354 / 0.7342, 6.98 %     window 15 (3): 0.422 / 0.7320, 5.58 %
  window 20 (4):          0.399 / 0.7262, 4.92 %     window 30 (4): 0.490 / 0.7482, 5.49 %
  window 45 (4):          0.531 / 0.7363, 8.08 %     window 60 (5): 0.512 / 0.7110, 7.72 %
(a window above 80 rows is refused: the 400 training rows must hold at least 5 windows.)
The yardstick picks 45, which scores the same as 10 on the labelled files (+0.002 F1 for +1.1
points of FAR), and it breaks what the detector is for on machines: the detector's own tests
(tests/test_detector.py) fail with it - a broken correlation in a process that cycles every two
minutes is averaged away by a 45-row mean, and the single-signal test's margin over the norm goes.
Window 30 scores best on the labels (+0.014) but was not the yardstick's choice, so the window
stays at 10. The longer windows show where the 0.85 is not: smoothing buys sensitivity to the
valve files' small flow shifts, and the healthy rig's own excursions (thermocouple warm-up ramp,
accelerometer and flow swings in anomaly-free.csv) take it back through the threshold factor.

The goal (F1 >= 0.85 at FAR <= 10 %) is not reached: most misses are faults whose signature is a
small flow or temperature change that a 400-row training window cannot tell from the rig's own
swings (the healthy recording has flow dips of the same size), plus the ~45-60 s between a valve
command and the flow responding, and the ~45 s the labels run on after the flow has recovered.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from diagnostics.offline.detector import MODEL_VERSION, DetectorSettings, MultivariateDetector  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "skab"
TRAIN_ROWS = 400
LABEL_COLUMNS = ("anomaly", "changepoint")
TIME_COLUMN = "datetime"
GROUPS = ("valve1", "valve2", "other")

# Published outlier-detection leaderboard (SKAB README, as quoted in SOURCE.md): name, F1, FAR %, MAR %.
LEADERBOARD = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla LSTM", 0.54, 12.54, 59.53),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("MSCRED", 0.36, 49.94, 69.88),
    ("Isolation forest", 0.29, 2.56, 82.89),
    ("Null detector", 0.0, 0.0, 100.0),
]

# Calibration of the threshold factor on healthy data (see the module docstring).
CALIBRATION_FACTORS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
CALIBRATION_BUDGET = 5.0  # % of healthy rows flagged
CALIBRATION_STEP = 500
CALIBRATION_TEST_ROWS = 750
# Synthetic faults in the healthy pseudo-experiments (see synthetic_faults).
SYNTHETIC_SHIFTS = (-3.0, -2.0, 2.0, 3.0)
SYNTHETIC_START, SYNTHETIC_RAMP, SYNTHETIC_LENGTH = 200, 30, 350


def read_skab(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Sensor names, sensor values and (if present) the ``anomaly`` labels of one SKAB file."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        rows = [r for r in reader if r]
    sensors = [i for i, h in enumerate(header) if h not in LABEL_COLUMNS and h != TIME_COLUMN]
    values = np.array([[float(r[i]) for i in sensors] for r in rows])
    labels = None
    if "anomaly" in header:
        a = header.index("anomaly")
        labels = np.array([float(r[a]) for r in rows]) > 0.5
    return [header[i] for i in sensors], values, labels


def labelled_files(data: Path) -> list[Path]:
    files = []
    for group in GROUPS:
        found = sorted((data / group).glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
        files.extend(found)
    return files


def confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Point-wise (TP, FP, FN, TN) of boolean predictions against boolean labels."""
    return np.array([np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth), np.sum(~pred & ~truth)])


def rates(counts: np.ndarray) -> dict[str, float]:
    """The protocol's F1, FAR % and MAR % of pooled (TP, FP, FN, TN)."""
    tp, fp, fn, tn = (int(c) for c in counts)
    return {"f1": tp / (tp + (fn + fp) / 2) if tp + fn + fp else 0.0,
            "far": fp / (fp + tn) * 100 if fp + tn else 0.0,
            "mar": fn / (fn + tp) * 100 if fn + tp else 0.0}


def run_protocol(data: Path, per_file: bool, settings: DetectorSettings) -> dict[str, float | int]:
    counts = np.zeros(4, dtype=np.int64)
    files = labelled_files(data)
    if not files:
        raise SystemExit(f"no labelled SKAB files under {data}")
    for path in files:
        names, x, y = read_skab(path)
        assert y is not None, f"{path} has no anomaly labels"
        det = MultivariateDetector(settings).fit(x[:TRAIN_ROWS], names)
        file_counts = confusion(det.predict(x[TRAIN_ROWS:]), y[TRAIN_ROWS:])
        counts += file_counts
        if per_file:
            f_tp, f_fp, f_fn, f_tn = file_counts
            print(f"  {path.parent.name}/{path.name:8s} TP {f_tp:4d}  FP {f_fp:4d}  FN {f_fn:4d}  TN {f_tn:4d}")
    tp, fp, fn, tn = (int(c) for c in counts)
    return {**rates(counts), "files": len(files), "test_points": tp + fp + fn + tn,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def healthy_pseudo_experiments(data: Path) -> tuple[list[str], list[np.ndarray]]:
    """anomaly-free.csv cut into protocol-sized parts (400 training rows + the next 750), every 500 rows."""
    names, x, _ = read_skab(data / "anomaly-free" / "anomaly-free.csv")
    span = TRAIN_ROWS + CALIBRATION_TEST_ROWS
    return names, [x[s0:s0 + span] for s0 in range(0, len(x) - span + 1, CALIBRATION_STEP)]


def calibrate(data: Path, settings: DetectorSettings) -> list[tuple[float, float]]:
    """Flagged % of healthy rows per threshold factor, on anomaly-free.csv pseudo-experiments."""
    names, parts = healthy_pseudo_experiments(data)
    table = []
    for factor in CALIBRATION_FACTORS:
        factored = replace(settings, threshold_factor=factor)
        fractions = []
        for part in parts:
            det = MultivariateDetector(factored).fit(part[:TRAIN_ROWS], names)
            fractions.append(float(np.mean(det.predict(part[TRAIN_ROWS:]))))
        table.append((factor, 100 * float(np.mean(fractions))))
    print(f"Threshold calibration on anomaly-free.csv ({len(parts)} pseudo-experiments of "
          f"{TRAIN_ROWS}+{CALIBRATION_TEST_ROWS} rows), budget {CALIBRATION_BUDGET:.0f} % flagged:")
    chosen = next((f for f, pct in table if pct <= CALIBRATION_BUDGET), None)
    for factor, pct in table:
        mark = "  <- smallest within budget" if factor == chosen else ""
        print(f"  factor {factor:4.1f}: {pct:5.2f} % of healthy rows flagged{mark}")
    return table


def synthetic_faults(data: Path, settings: DetectorSettings) -> dict[str, float]:
    """F1 and FAR on shifts injected into the healthy pseudo-experiments: a yardstick without test labels.

    Each signal in turn is shifted by -3, -2, +2 and +3 of its raw training spread, ramped in over
    30 rows, held for 350 rows from test row 200; every other row of the part is healthy.
    """
    names, parts = healthy_pseudo_experiments(data)
    start, ramp, length = SYNTHETIC_START, SYNTHETIC_RAMP, SYNTHETIC_LENGTH
    profile = np.zeros(CALIBRATION_TEST_ROWS)
    profile[start:start + length] = 1.0
    profile[start:start + ramp] = np.linspace(0.0, 1.0, ramp)
    truth = profile > 0
    counts = np.zeros(4, dtype=np.int64)
    for part in parts:
        det = MultivariateDetector(settings).fit(part[:TRAIN_ROWS], names)
        spread = part[:TRAIN_ROWS].std(axis=0)
        for j in range(part.shape[1]):
            for size in SYNTHETIC_SHIFTS:
                test = part[TRAIN_ROWS:].copy()
                test[:, j] += size * spread[j] * profile
                counts += confusion(det.predict(test), truth)
    found = rates(counts)
    return {"f1": round(found["f1"], 4), "far": round(found["far"], 2), "mar": round(found["mar"], 2)}


def parse_settings(pairs: list[str]) -> DetectorSettings:
    """``NAME=VALUE`` overrides of the detector's settings, for trying a variant."""
    fields = DetectorSettings.__dataclass_fields__
    overrides: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--setting wants NAME=VALUE with NAME one of {', '.join(fields)}; got {pair!r}")
        default = getattr(DetectorSettings(), name)
        overrides[name] = value.lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(value)
    return DetectorSettings(**overrides)


def print_leaderboard(ours: dict[str, float | int]) -> None:
    rows = [(name, f1, far, mar, False) for name, f1, far, mar in LEADERBOARD]
    mine = ("IronSight (this run)", round(float(ours["f1"]), 2), float(ours["far"]), float(ours["mar"]), True)
    # Rank by F1 (higher first); at equal F1, fewer false alarms first.
    rows.append(mine)
    rows.sort(key=lambda r: (-r[1], r[2]))
    print("SKAB outlier detection (published leaderboard, ours inserted by F1):")
    print(f"  {'rank':>4}  {'algorithm':<22} {'F1':>5} {'FAR %':>7} {'MAR %':>7}")
    for rank, (name, f1, far, mar, is_ours) in enumerate(rows, 1):
        f1_text = f"{ours['f1']:.3f}" if is_ours else f"{f1:.2f}"
        mark = "  <==" if is_ours else ""
        print(f"  {rank:>4}  {name:<22} {f1_text:>5} {far:7.2f} {mar:7.2f}{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="SKAB data folder (default: ../shared/datasets/skab beside the repository)")
    parser.add_argument("--per-file", action="store_true", help="print the counts of every file")
    parser.add_argument("--calibrate", action="store_true",
                        help="also rerun the threshold-factor calibration on anomaly-free.csv")
    parser.add_argument("--synthetic", action="store_true",
                        help="also score shifts injected into anomaly-free.csv (no test labels involved)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="override a detector setting (e.g. window=30, threshold_factor=4) to try a variant")
    args = parser.parse_args(argv)
    data = args.data if args.data.is_absolute() else (Path.cwd() / args.data)
    if not data.is_dir():
        parser.error(f"no such folder: {data}")

    started = time.perf_counter()
    settings = parse_settings(args.setting)
    calibration = calibrate(data, settings) if args.calibrate else None
    synthetic = synthetic_faults(data, settings) if args.synthetic else None
    if synthetic is not None:
        print(f"Synthetic shifts in anomaly-free.csv: F1 {synthetic['f1']:.4f}, FAR {synthetic['far']:.2f} %, "
              f"MAR {synthetic['mar']:.2f} %")
    result = run_protocol(data, args.per_file, settings)
    seconds = time.perf_counter() - started
    print_leaderboard(result)
    print(f"Goal F1 >= 0.85 with FAR <= 10 %: {'met' if result['f1'] >= 0.85 and result['far'] <= 10 else 'NOT met'}")
    summary = {
        "f1": round(float(result["f1"]), 4),
        "far": round(float(result["far"]), 2),
        "mar": round(float(result["mar"]), 2),
        "files": result["files"],
        "test_points": result["test_points"],
        "tp": result["tp"], "fp": result["fp"], "fn": result["fn"], "tn": result["tn"],
        "train_rows": TRAIN_ROWS,
        "detector_version": MODEL_VERSION,
        "settings": settings.to_dict(),
        "seconds": round(seconds, 1),
    }
    if synthetic is not None:
        summary["synthetic"] = synthetic
    if calibration is not None:
        summary["calibration"] = {f"{f:g}": round(p, 2) for f, p in calibration}
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
