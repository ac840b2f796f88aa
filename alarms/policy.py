"""The alarm policy: flapping, escalation and where escalations go, from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alarms.lifecycle import FLAP_THRESHOLD, FLAP_WINDOW_S

# An unacknowledged critical alarm escalates after this long; level k after k times this.
ESCALATION_AFTER_MIN = 15.0
# Levels after the first responder: e.g. 1 = shift supervisor, 2 = expert group.
ESCALATION_MAX_LEVEL = 2
ESCALATION_SEVERITIES = ("critical",)


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    flap_window_s: float = FLAP_WINDOW_S
    flap_threshold: int = FLAP_THRESHOLD
    escalation_after_min: float = ESCALATION_AFTER_MIN
    escalation_max_level: int = ESCALATION_MAX_LEVEL
    # Unset: escalations are recorded in the alarm's history but sent nowhere.
    escalation_webhook_url: str | None = None
    escalation_severities: tuple[str, ...] = ESCALATION_SEVERITIES

    @classmethod
    def from_settings(cls, settings: Any) -> AlarmPolicy:
        """Read the ``IRONSIGHT_ALARM_*`` / ``IRONSIGHT_ESCALATION_*`` settings; absent ones keep the defaults."""
        defaults = cls()
        return cls(
            flap_window_s=float(getattr(settings, "alarm_flap_window_s", defaults.flap_window_s)),
            flap_threshold=int(getattr(settings, "alarm_flap_threshold", defaults.flap_threshold)),
            escalation_after_min=float(getattr(settings, "escalation_after_min", defaults.escalation_after_min)),
            escalation_max_level=int(getattr(settings, "escalation_max_level", defaults.escalation_max_level)),
            escalation_webhook_url=getattr(settings, "escalation_webhook_url", None) or None,
        )
