"""What Grafana does to a PostgreSQL query before the database sees it, reimplemented.

No Grafana server runs in the tests, so the dashboards' SQL is prepared here the way Grafana
prepares it, then run on the real database:

1. the browser picks ``$__interval`` for the panel: the time range divided by the panel's data
   points, rounded to a "nice" step, at least the data source's minimum interval
   (``rangeutil.calculateInterval``/``roundInterval``/``secondsToHms`` in @grafana/data);
2. the browser replaces template variables (``templateSrv.replace`` with the SQL data sources'
   ``interpolateVariable``: values of multi-value or include-All variables are quoted as SQL
   literals and joined with commas; a single value has its quotes doubled but is not quoted;
   "All" becomes every option, or the variable's custom all value unformatted);
3. the server replaces ``$__interval``, ``$__interval_ms``, ``$__unixEpochFrom()`` and
   ``$__unixEpochTo()`` (sqleng ``Interpolate``), then the PostgreSQL macros
   (``pkg/tsdb/grafana-postgresql-datasource/macros.go``): ``$__timeFilter``, ``$__timeFrom``,
   ``$__timeTo``, ``$__timeGroup``/``$__timeGroupAlias`` (``floor(extract(epoch …))`` or, with the
   data source's TimescaleDB toggle, ``time_bucket``), ``$__time``, ``$__timeEpoch``,
   ``$__unixEpochFilter``, ``$__unixEpochNanoFilter``, ``$__unixEpochGroup`` and their aliases.
   An unknown macro is an error, as in Grafana.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# --- time ranges and intervals (browser side) ---


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, span: timedelta, now: datetime | None = None) -> TimeRange:
        """``now-<span>`` to ``now``, at the millisecond precision the browser sends."""
        end = (now or datetime.now(UTC)).astimezone(UTC)
        end = end.replace(microsecond=end.microsecond // 1000 * 1000)
        return cls(end - span, end)

    @property
    def span_ms(self) -> float:
        return (self.end - self.start) / timedelta(milliseconds=1)


# roundInterval: (upper bound of the raw interval in ms, the nice interval in ms)
_NICE_INTERVALS_MS = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000),
    (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)
_YEAR_MS = 31536000000


def round_interval(interval_ms: float) -> int:
    for below, nice in _NICE_INTERVALS_MS:
        if interval_ms < below:
            return nice
    return _YEAR_MS


def seconds_to_hms(seconds: float) -> str:
    """Grafana's compact interval text: the largest whole unit (``1y``, ``2d``, ``5m``, ``200ms``)."""
    in_year = seconds % 31536000
    for whole, suffix in ((math.floor(seconds / 31536000), "y"), (math.floor(in_year / 86400), "d"),
                          (math.floor((in_year % 86400) / 3600), "h"),
                          (math.floor(((in_year % 86400) % 3600) / 60), "m"),
                          (math.floor(((in_year % 86400) % 3600) % 60), "s"),
                          (math.floor(seconds * 1000.0), "ms")):
        if whole:
            return f"{whole}{suffix}"
    return "less than a millisecond"


_INTERVAL_UNITS_S = {"y": 31536000, "M": 2592000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1,
                     "ms": 0.001}
_INTERVAL_TEXT = re.compile(r"(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])")


def interval_to_ms(text: str) -> float:
    """``describeInterval``: ``"10s"`` → 10000; a bare (non-zero) number is seconds."""
    try:
        number = float(text)
    except ValueError:
        number = 0.0
    if number:
        return int(number) * 1000.0
    match = _INTERVAL_TEXT.search(text)
    if not match:
        raise ValueError(f"invalid interval {text!r}")
    return _INTERVAL_UNITS_S[match.group(2)] * 1000 * int(float(match.group(1)))


@dataclass(frozen=True, slots=True)
class Interval:
    text: str  # $__interval
    ms: int  # $__interval_ms


def calculate_interval(time_range: TimeRange, resolution: int, low_limit: str | None = None) -> Interval:
    """``rangeutil.calculateInterval``: ``resolution`` is the panel's max data points (its width in
    pixels unless the panel sets ``maxDataPoints``); ``low_limit`` the panel's or data source's
    minimum interval."""
    low_limit_ms = interval_to_ms(low_limit) if low_limit else 1
    interval_ms = round_interval(time_range.span_ms / resolution)
    interval_ms = max(interval_ms, int(low_limit_ms))
    return Interval(seconds_to_hms(interval_ms / 1000), interval_ms)


# --- template variables (browser side) ---


@dataclass(slots=True)
class VariableValue:
    """A variable's current value as Grafana's template service sees it."""

    value: str | list[str]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: list[str] = field(default_factory=list)  # every option's value, for "All"

    @property
    def is_all(self) -> bool:
        return self.value == "$__all" or (isinstance(self.value, list) and self.value[:1] == ["$__all"])


# templateSrv's variable pattern: $name, [[name:format]], ${name.fieldPath:format}
VARIABLE_PATTERN = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql_interpolate(value: str | list[str], variable: VariableValue | None) -> str:
    """The SQL data sources' ``interpolateVariable``."""
    if isinstance(value, list):
        return ",".join(quote_literal(v) for v in value)
    if variable is not None and (variable.multi or variable.include_all):
        return quote_literal(value)
    return str(value).replace("'", "''")


def _format(value: str | list[str], fmt: str) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt == "raw":
        return ",".join(values)
    if fmt == "sqlstring":
        return ",".join(quote_literal(v) for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "percentencode":
        text = values[0] if len(values) == 1 else "{" + ",".join(values) + "}"
        return urllib.parse.quote(text, safe="-_.!~*'()")
    raise ValueError(f"variable format {fmt!r} is not emulated")


def interpolate(text: str, variables: dict[str, VariableValue], scoped: dict[str, str] | None = None, *,
                sql: bool = True) -> str:
    """``templateSrv.replace(text, scopedVars, interpolateVariable)`` (``sql=False``: no data source
    formatting, as for links). Unknown names are left as they are, as Grafana leaves them."""
    scoped = scoped or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in scoped:
            value: str | list[str] = scoped[name]
            variable = None
        elif name in variables:
            variable = variables[name]
            value = variable.value
            if variable.is_all:
                if variable.all_value is not None and fmt not in ("text", "percentencode"):
                    return interpolate(variable.all_value, variables, scoped, sql=sql)
                value = list(variable.options)
        else:
            return match.group(0)
        if fmt:
            return _format(value, fmt)
        if sql:
            return _sql_interpolate(value, variable)
        return value if isinstance(value, str) else ",".join(value)

    return VARIABLE_PATTERN.sub(replace, text)


def referenced_variables(text: str) -> set[str]:
    """Names of every variable-like reference in ``text`` (``$x``, ``${x.y:fmt}``, ``[[x]]``)."""
    return {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_PATTERN.finditer(text)}


# --- server side: global substitutions and the PostgreSQL macros ---

_GO_PERIOD = re.compile(r"^(\d+)([wdyM])$")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_interval(text: str) -> timedelta:
    """gtime.ParseInterval: ``Nd``/``Nw``/``NM``/``Ny`` by the calendar (UTC), else a Go duration."""
    period = _GO_PERIOD.match(text)
    if period:
        count, unit = int(period.group(1)), period.group(2)
        if unit in "dw":
            return timedelta(days=count * (7 if unit == "w" else 1))
        now = datetime.now(UTC)
        months = count if unit == "M" else 12 * count
        year, month = divmod(now.month - 1 + months, 12)
        day = min(now.day, _days_in_month(now.year + year, month + 1))
        return now.replace(year=now.year + year, month=month + 1, day=day) - now
    if text == "0":
        return timedelta(0)
    position, total = 0, 0.0
    for part in _GO_DURATION_PART.finditer(text):
        if part.start() != position:
            break
        total += float(part.group(1)) * _GO_UNITS_S[part.group(2)]
        position = part.end()
    if position != len(text) or position == 0:
        raise ValueError(f"error parsing interval {text}")
    return timedelta(seconds=total)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the server's text for ``$__interval``."""
    ms = interval // timedelta(milliseconds=1)
    for unit_ms, suffix in ((31536000000, "y"), (86400000, "d"), (3600000, "h"), (60000, "m"), (1000, "s"),
                            (1, "ms")):
        if ms >= unit_ms:
            return f"{ms // unit_ms}{suffix}"
    return "1ms"


def rfc3339_nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds without trailing zeros, ``Z``."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64 for the values intervals take (whole seconds print without ``.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _epoch_s(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _epoch_ns(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


class MacroError(ValueError):
    pass


_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def server_interpolate(sql: str, time_range: TimeRange, interval_ms: int) -> str:
    """sqleng ``Interpolate``: what every SQL data source replaces before its macros."""
    interval = timedelta(milliseconds=interval_ms)
    sql = sql.replace("$__interval_ms", str(interval_ms))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(_epoch_s(time_range.start)))
    return sql.replace("$__unixEpochTo()", str(_epoch_s(time_range.end)))


def expand_macros(sql: str, time_range: TimeRange, *, timescaledb: bool) -> str:
    """The PostgreSQL macro engine. Raises :class:`MacroError` where Grafana reports an error."""

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip(" ") for a in match.group(2).split(",")]
        if name == "__timeGroup":
            after = match.end()
            if after < len(sql) and sql[after] == ",":  # pre-5.3 use: $__timeGroup(…), value
                name = "__timeGroupAlias"
        return _macro(name, args, time_range, timescaledb)

    return _MACRO.sub(replace, sql)


def _group(args: list[str], timescaledb: bool, *, epoch_column: bool) -> str:
    if len(args) < 2:
        raise MacroError("macro needs time column and interval and optional fill value")
    try:
        seconds = parse_go_interval(args[1].strip("'")).total_seconds()
    except ValueError:
        raise MacroError(f"error parsing interval {args[1]}") from None
    if len(args) == 3:
        _check_fill(args[2])
    if epoch_column:
        return f"floor(({args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
    if timescaledb:
        return f"time_bucket('{seconds:.3f}s',{args[0]})"
    return f"floor(extract(epoch from {args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"


def _check_fill(fill: str) -> None:
    """sqleng.SetupFillmode: NULL, previous, or a number."""
    if fill in ("NULL", "previous"):
        return
    try:
        float(fill)
    except ValueError:
        raise MacroError(f"error parsing fill value {fill}") from None


def _macro(name: str, args: list[str], time_range: TimeRange, timescaledb: bool) -> str:
    start, end = time_range.start, time_range.end
    column_needed = name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter")
    if column_needed and (not args or args == [""]):
        raise MacroError(f"missing time column argument for macro {name}")
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339_nano(start)}' AND '{rfc3339_nano(end)}'"
        case "__timeFrom":
            return f"'{rfc3339_nano(start)}'"
        case "__timeTo":
            return f"'{rfc3339_nano(end)}'"
        case "__timeGroup":
            return _group(args, timescaledb, epoch_column=False)
        case "__timeGroupAlias":
            return _group(args, timescaledb, epoch_column=False) + ' AS "time"'
        case "__unixEpochFilter":
            return f"{args[0]} >= {_epoch_s(start)} AND {args[0]} <= {_epoch_s(end)}"
        case "__unixEpochNanoFilter":
            return f"{args[0]} >= {_epoch_ns(start)} AND {args[0]} <= {_epoch_ns(end)}"
        case "__unixEpochNanoFrom":
            return str(_epoch_ns(start))
        case "__unixEpochNanoTo":
            return str(_epoch_ns(end))
        case "__unixEpochGroup":
            return _group(args, timescaledb, epoch_column=True)
        case "__unixEpochGroupAlias":
            return _group(args, timescaledb, epoch_column=True) + ' AS "time"'
    raise MacroError(f"unknown macro {name!r}")


def prepare(sql: str, variables: dict[str, VariableValue], time_range: TimeRange, interval: Interval, *,
            timescaledb: bool) -> str:
    """A panel's raw SQL as the database receives it from Grafana."""
    scoped = {"__interval": interval.text, "__interval_ms": str(interval.ms)}
    text = interpolate(sql, variables, scoped)
    text = server_interpolate(text, time_range, interval.ms)
    return expand_macros(text, time_range, timescaledb=timescaledb)


# Names Grafana provides itself: template built-ins, data link and URL variables, SQL macros.
BUILT_IN_NAMES = frozenset({
    "__interval", "__interval_ms", "__rate_interval", "__from", "__to", "__range", "__range_s", "__range_ms",
    "__dashboard", "__user", "__org", "__timezone", "__data", "__value", "__field", "__series", "__url",
    "__url_time_range", "__all_variables", "__name", "__all",
    "__time", "__timeEpoch", "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup", "__timeGroupAlias",
    "__unixEpochFilter", "__unixEpochNanoFilter", "__unixEpochNanoFrom", "__unixEpochNanoTo", "__unixEpochGroup",
    "__unixEpochGroupAlias", "__unixEpochFrom", "__unixEpochTo", "__schema", "__table", "__column",
})
