"""Base errors shared by every package."""


class IronSightError(Exception):
    """Root of the project's own errors."""


class InvalidTelemetry(IronSightError):
    """A device payload that cannot be accepted; ``reason`` is a short stable code for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
