"""What every consumer of device traffic shares: the message as it left paho's network thread,
and how much of bad input is kept and logged.

Telemetry (ingest) and the device side (devices: status, acks, provisioning) both take messages
off the broker into a queue and both dead-letter what they cannot read; these are the terms they
agree on.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

# A dead letter keeps this much of the refused payload: enough to see what was wrong.
DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024
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

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self._log = logger
        self._who = who
        self.by_reason: Counter[str] = Counter()

    def record(self, reason: str, detail: str, *args: object) -> int:
        """Count one more of ``reason``; ``detail`` is a %-format for ``args``. Returns the count."""
        self.by_reason[reason] += 1
        count = self.by_reason[reason]
        if count == 1 or count % LOG_EVERY_NTH_BAD == 0:
            self._log.warning("%s: %s #%d: " + detail, self._who, reason, count, *args)
        return count
