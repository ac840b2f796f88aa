"""Offline diagnosis of a recorded series (a controller log exported as CSV).

The detector of diagnostics.offline.detector is trained on the first ``train_rows`` rows (assumed
healthy) and every later row is scored in order, exactly as the streaming engine would score the
same readings. Used by ``ironsight diagnose-csv``; the CLI only parses its arguments and calls
``write_diagnosis_csv``.

Input: a header row, then one row per reading in time order. Every column whose non-empty cells
all parse as numbers is a signal, except the time column; other columns are ignored. Empty or
unparsable cells in a signal column (``NA``, ``-``) are missing readings: they are carried forward
in training (from the next reading for leading gaps) and carry no evidence when scoring.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from diagnostics.offline.detector import MultivariateDetector

logger = logging.getLogger(__name__)

SCORE_COLUMN = "score"
ANOMALY_COLUMN = "anomaly"
CONTRIBUTORS_COLUMN = "contributors"
# Signals listed per anomalous row when contributors are asked for.
TOP_CONTRIBUTORS = 3


@dataclass(frozen=True, slots=True)
class RecordedSeries:
    """The numeric signals of a CSV file, with its time column (raw text) if one was named."""

    features: list[str]
    values: np.ndarray  # rows x features, NaN where missing
    times: list[str] | None
    ignored: list[str]


def _number(text: str) -> float | None:
    """The cell as a number; None for an empty/missing cell; NaN marks 'not a number'."""
    t = text.strip()
    if not t or t.upper() in {"NA", "NAN", "NULL", "NONE", "-"}:
        return None
    try:
        return float(t)
    except ValueError:
        return math.nan


def read_series(path: str | Path, *, time_column: str | None = None, sep: str = ",") -> RecordedSeries:
    """Read the numeric columns (and the time column) of a CSV file."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        rows = [r for r in reader if any(c.strip() for c in r)]
    if time_column is not None and time_column not in header:
        raise ValueError(f"{path}: no column {time_column!r} (columns: {', '.join(header)})")
    time_idx = header.index(time_column) if time_column is not None else None
    cells: list[list[float | None]] = [[None] * len(header) for _ in rows]
    for i, row in enumerate(rows):
        if len(row) > len(header):
            raise ValueError(f"{path}: row {i + 2} has {len(row)} cells, the header {len(header)}")
        for j, text in enumerate(row):
            if j != time_idx:
                cells[i][j] = _number(text)
    features, columns, ignored = [], [], []
    for j, name in enumerate(header):
        if j == time_idx:
            continue
        col = [row[j] for row in cells]
        present = [v for v in col if v is not None]
        if present and not any(math.isnan(v) for v in present):
            features.append(name)
            columns.append([math.nan if v is None else v for v in col])
        else:
            ignored.append(name)
    if ignored:
        logger.info("%s: ignoring non-numeric columns %s", path, ignored)
    if not features:
        raise ValueError(f"{path}: no numeric columns")
    values = np.array(columns, dtype=float).T.reshape(len(rows), len(features))
    times = [row[time_idx] if time_idx < len(row) else "" for row in rows] if time_idx is not None else None
    return RecordedSeries(features, values, times, ignored)


def _fill_missing(x: np.ndarray) -> np.ndarray:
    """Carry the last reading forward; leading gaps take the first reading."""
    out = x.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = np.flatnonzero(np.isfinite(col))
        if len(ok) == 0:
            raise ValueError("a signal has no readings in the training rows")
        idx = np.maximum.accumulate(np.where(np.isfinite(col), np.arange(len(col)), -1))
        idx[idx < 0] = ok[0]
        out[:, j] = col[idx]
    return out


def diagnose_csv(path: str | Path, train_rows: int, time_column: str | None = None, sep: str = ",", *,
                 contributors: bool = False) -> Iterator[dict[str, str | float | int]]:
    """Train on the first ``train_rows`` rows, then yield one dict per later row, in order.

    Each dict has the time column's value (under its own name, when a time column is named),
    ``score`` (1.0 = the threshold) and ``anomaly`` (0/1); with ``contributors``, also the signals
    that contributed most while anomalous (``name(z=…)``, ``;``-separated).
    """
    series = read_series(path, time_column=time_column, sep=sep)
    n = len(series.values)
    if train_rows < 1 or train_rows >= n:
        raise ValueError(f"train_rows must be between 1 and {n - 1} (the file has {n} rows)")
    detector = MultivariateDetector().fit(_fill_missing(series.values[:train_rows]), series.features)
    state = detector.new_state()
    for i in range(train_rows, n):
        score, anomalous = detector.update(state, series.values[i])
        out: dict[str, str | float | int] = {}
        if series.times is not None and time_column is not None:
            out[time_column] = series.times[i]
        out[SCORE_COLUMN] = score
        out[ANOMALY_COLUMN] = int(anomalous)
        if contributors:
            top = detector.explain(state=state, top=TOP_CONTRIBUTORS) if anomalous else []
            out[CONTRIBUTORS_COLUMN] = ";".join(f"{c.feature}(z={c.z:+.1f})" for c in top if c.contribution > 0)
        yield out


def write_diagnosis_csv(path: str | Path, out_stream: TextIO, *, train_rows: int, time_column: str | None = None,
                        sep: str = ",", contributors: bool = False) -> int:
    """Write the diagnosis of ``path`` as CSV (same separator) to ``out_stream``; return the row count."""
    columns = ([time_column] if time_column is not None else []) + [SCORE_COLUMN, ANOMALY_COLUMN]
    if contributors:
        columns.append(CONTRIBUTORS_COLUMN)
    rows = diagnose_csv(path, train_rows, time_column, sep, contributors=contributors)
    first = next(rows, None)  # read and train before writing anything, so errors leave no partial output
    writer = csv.writer(out_stream, delimiter=sep, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in ([first] if first is not None else []):
        writer.writerow(_cells(row, columns))
        count += 1
    for row in rows:
        writer.writerow(_cells(row, columns))
        count += 1
    return count


def _cells(row: dict[str, str | float | int], columns: list[str]) -> list[str]:
    cells = []
    for c in columns:
        v = row[c]
        cells.append(f"{v:.6g}" if isinstance(v, float) else str(v))
    return cells
