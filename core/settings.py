"""One settings class for every process, read from ``IRONSIGHT_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IRONSIGHT_", extra="ignore")

    # Unset means "start an embedded one" (see ironsight.embedded_postgres and ironsight.embedded_broker).
    database_url: str | None = None
    mqtt_url: str | None = None

    # Root of every MQTT topic; a test run or a second deployment on one broker picks its own.
    topic_root: str = "ironsight"
    data_dir: Path = Path(".ironsight")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Where the alarms worker reaches the tickets API; derived from api_host/api_port when unset.
    api_url: str | None = None
    # The API's address as its clients reach it (https://fleet.example.com), for the links in ISO
    # 15143-3 documents; unset, the links are paths from the server's root. Never taken from a
    # request's Host header, which the client chooses.
    public_url: str | None = None

    # Readings stamped further ahead than this are refused: controller clocks drift, but not by minutes.
    future_tolerance_s: float = 300.0
    # A reading older than its machine's newest by more than this is stored as backlog, but its engine
    # hours are not taken: the hours and usage of a day already reported stay as they were.
    late_window_s: float = 86400.0
    # Ingest folds the controllers' message sequence numbers into gaps once they are this old (a
    # message of one controller may be committed by another worker a moment later); a gap still open
    # after sequence_give_up_s is counted lost. The devices worker asks a connected controller to
    # resend a gap open for resend_after_s, and again every resend_retry_s, at most resend_attempts times.
    sequence_settle_s: float = 10.0
    sequence_fold_every_s: float = 10.0
    sequence_give_up_s: float = 3600.0
    resend_after_s: float = 5.0
    resend_retry_s: float = 120.0
    resend_attempts: int = 3
    # Phone numbers given without a country code are read as numbers of this region (ISO 3166 code).
    phone_region: str = "NL"
    # A controller silent for this long is shown offline.
    offline_after_s: float = 60.0

    # A cleared alarm whose fault returns within this window is reopened (one alarm with a count), not a new
    # alarm; reopened more than alarm_flap_threshold times within the window, it is marked flapping.
    alarm_flap_window_s: float = 600.0
    alarm_flap_threshold: int = 2
    # An unacknowledged critical alarm escalates after this many minutes (level k after k times it), up to
    # escalation_max_level; each level is POSTed as JSON to escalation_webhook_url (unset: recorded, not sent).
    escalation_after_min: float = 15.0
    escalation_max_level: int = 2
    escalation_webhook_url: str | None = None

    # SLA scheduler: how often it checks, and at what share of the allowed time it warns.
    sla_check_every_s: float = 10.0
    sla_warn_fraction: float = 0.75

    # Dispatch travel times: great-circle distance × road factor ÷ average speed, plus a stop to collect a
    # part; the promised arrival is the ETA + the margin.
    dispatch_road_factor: float = 1.3
    dispatch_speed_kmh: float = 60.0
    dispatch_pickup_min: float = 15.0
    dispatch_margin_min: float = 30.0
    # Dispatch proposals leave out trips longer than this (the ticket waits for a nearer crew).
    dispatch_max_travel_h: float = 4.0
    # The tracking worker calls a vehicle arrived within this distance of the machine (or of the
    # warehouse where it collects a part).
    arrival_radius_m: float = 300.0

    # Remote commands: how long one stays valid by default, and how often the devices worker sweeps
    # for expired commands and for commands to send (a new command wakes it at once).
    command_timeout_s: float = 60.0
    command_tick_s: float = 0.5

    # Dead letters (refused device input) are deleted once older than this many days (0: kept forever), by
    # the ingest workers in small batches every dead_letter_purge_every_s (ingest.dead_letters).
    dead_letter_retention_days: float = 14.0
    dead_letter_purge_every_s: float = 600.0

    # Broker security (Mosquitto): where the devices worker writes the password and ACL files
    # generated from the device registry (unset: not managed), the broker's pid file to signal it
    # to reload them, and the passwords of IronSight's own accounts (unset: account not granted).
    broker_auth_dir: Path | None = None
    broker_pid_file: Path | None = None
    broker_auth_sync_every_s: float = 30.0
    mqtt_ingest_password: str | None = None
    mqtt_backend_password: str | None = None
    mqtt_provisioning_password: str | None = None
    # Whether a controller whose serial nobody pre-registered may register itself (as a machine of its
    # own, customer "unassigned", for an administrator to complete); off: only pre-registered serials.
    provisioning_open: bool = False
    # `ironsight run` only: let its embedded broker accept anonymous clients, with no password or ACL
    # (`--insecure-broker`). Off: every client authenticates and is confined to its own topics.
    insecure_broker: bool = False

    # Bootstrap accounts, created by the API at start when missing. Unset means none: there is no default
    # password. The alarms worker sends alarms_api_key; the API registers it for the service account.
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    alarms_api_key: SecretStr | None = None
    # Access tokens from the password flow expire; API keys live until revoked (or their own expiry).
    access_token_ttl_min: float = 12 * 60.0
    # Browser origins allowed to call the API (comma-separated); none by default.
    cors_origins: Annotated[list[str], NoDecode] = []
    # Per token (or per client address without one): a burst of rate_limit_burst requests, refilled at
    # rate_limit_per_min. Generous enough for a dashboard, small enough to stop a runaway script.
    rate_limit_per_min: float = 600.0
    rate_limit_burst: int = 120
    # Request bodies larger than this are refused with 413 before they are read.
    max_body_bytes: int = 1_048_576
    # Credential hardening (api.accounts, api.limits; docs/api.md). Logins per username: after
    # login_failures_before_lockout failures in a row the username is locked for login_lockout_s, doubled
    # with each further failure up to login_lockout_max_s; a successful login clears it. Proxies whose
    # X-Forwarded-For is believed (addresses or networks, comma-separated; none by default). Active API
    # keys one account may hold.
    login_failures_before_lockout: int = 5
    login_lockout_s: float = 30.0
    login_lockout_max_s: float = 900.0
    trusted_proxies: str = ""
    api_keys_per_user_max: int = 20

    # ISO 15143-3 documents: the OEM name in every equipment header, and the tank size that turns the
    # reported fuel level (percent) into the litres the standard counts in.
    iso_oem_name: str = "IronSight"
    fuel_tank_litres: float = 400.0

    # Notifications (notifications/, docs/notifications.md). Every event also goes to the integration webhook
    # when set (resolved when the event is written); webhooks and the SMS gateway are signed with the secret.
    # E-mail through smtp_url (smtp://user:pass@host:port, smtps:// for implicit TLS, ?starttls=true); SMS
    # POSTed to sms_gateway_url. A channel left unset marks its notifications `unsent` (not retried). A
    # worker holds a claimed notification for notify_lease_s (then another may retry it); failures are
    # retried with backoff up to notify_retry_max_s apart, until notify_give_up_after_h after queueing.
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    smtp_url: SecretStr | None = None
    mail_from: str = "IronSight <notifications@ironsight.invalid>"
    sms_gateway_url: str | None = None
    notify_timeout_s: float = 10.0
    notify_lease_s: float = 120.0
    notify_retry_max_s: float = 300.0
    notify_give_up_after_h: float = 24.0

    # Prometheus metrics of a worker process (core.metrics): served on this port of metrics_host; unset or 0:
    # none. `ironsight run` gives each service its own port from this base (9400 when unset; 0: none).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    log_level: str = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    def tickets_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"
