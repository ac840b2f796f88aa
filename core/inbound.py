"""What every consumer of device traffic shares: the message as it left paho's network thread,
and how much of bad input is kept and logged.

Telemetry (ingest) and the device side (devices: status, acks, provisioning) both take messages
off the broker into a queue and both dead-letter what they cannot read; these are the terms they
agree on, with the checks every JSON decoder of device input makes before it parses (size, nesting
depth) and the text a dead letter can store.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from core.errors import InvalidTelemetry

# A dead letter keeps this much of the refused payload: enough to see what was wrong.
DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024
# The deepest nesting of arrays and objects any JSON message may have. v1 needs 5 (telemetry:
# envelope, readings, reading, dtc, code); the margin is for fields a later v1 may add. Whatever
# walks a decoded message recursively (json.dumps of a refused reading, repr in a detail, psycopg's
# Jsonb) is then safe from Python's recursion limit, which a few KB of brackets would reach.
MAX_JSON_DEPTH = 32
# A flood of bad payloads must not flood the log: the first of each reason, then every Nth.
LOG_EVERY_NTH_BAD = 1000


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int


class BadInputLog:
    """Bad input counted per reason and logged: the first of each reason, then every
    ``LOG_EVERY_NTH_BAD``th, so a flood of it never floods the log."""

    def __init__(self, logger: logging.Logger, who: str, *, on_record: Callable[[str], None] | None = None) -> None:
        self._log = logger
        self._who = who
        # Also told each reason recorded (a metric: core.metrics.by_reason).
        self._on_record = on_record
        self.by_reason: Counter[str] = Counter()

    def record(self, reason: str, detail: str, *args: object, exc_info: bool = False) -> int:
        """Count one more of ``reason``; ``detail`` is a %-format for ``args``. Returns the count.

        ``exc_info``: the entries that are logged carry the exception being handled (its traceback)."""
        self.by_reason[reason] += 1
        if self._on_record is not None:
            self._on_record(reason)
        count = self.by_reason[reason]
        if count == 1 or count % LOG_EVERY_NTH_BAD == 0:
            self._log.warning("%s: %s #%d: " + detail, self._who, reason, count, *args, exc_info=exc_info)
        return count

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


# --- what every JSON decoder checks before it parses ---

# Everything but brackets and quotes, for bytes.translate to delete.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
# +1 for an opening bracket, -1 for a closing one, by byte value.
_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def json_depth(payload: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, counted on its raw bytes without parsing
    it; brackets inside strings do not count."""
    return _depth(_brackets(payload))


def _brackets(payload: bytes) -> bytes:
    """The brackets of a JSON text outside its strings, in order. At C speed: a few byte-string passes.

    For a malformed text the brackets are those a parser reads before it stops, and maybe more,
    never fewer: escapes go first (an escaped backslash, then an escaped quote), quotes then delimit
    the strings (an unterminated string hides only what no parser reaches).
    """
    if b"\\" in payload:
        payload = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Adjacent quotes are an empty string, or the end of one string and the start of the next:
    # dropping them changes nothing, and leaves few (usually no) quotes for the split.
    structure = payload.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    return structure


def _depth(brackets: bytes) -> int:
    """The highest running sum of +1 per opening and -1 per closing bracket."""
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_json_payload(payload: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON payload before it is parsed: larger than ``max_bytes`` (``payload_too_large``),
    or nesting deeper than ``max_depth`` (``too_deep``). Every JSON decoder of device input calls it
    first, so that no parser and no code after it meets a document it cannot handle."""
    if len(payload) > max_bytes:
        raise InvalidTelemetry("payload_too_large", f"{len(payload)} bytes > {max_bytes}")
    # No more brackets than the limit cannot nest deeper than it: most messages stop there.
    if len(payload) > max_depth and len(brackets := _brackets(payload)) > max_depth \
            and (depth := _depth(brackets)) > max_depth:
        raise InvalidTelemetry("too_deep", f"arrays and objects nested {depth} deep > {max_depth}")


def is_version(value: object, version: int) -> bool:
    """``value`` is the integer ``version``: not ``true`` (a bool is an int in Python, and True == 1),
    not ``1.0``."""
    return type(value) is int and value == version


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL can store it in a text column: NUL and lone surrogates (which a
    device's ``\\u0000`` or ``\\ud800`` escapes can produce) written as backslash escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
