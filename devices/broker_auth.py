"""Mosquitto's password and ACL files, generated from the device registry.

Every active device gets a username (its equipment id) and may publish only to its own telemetry,
status and ack topics and subscribe only to its own command topic. Every active service-van tracker
gets the username ``vehicle~<vehicle id>`` (``~`` is outside the equipment id alphabet, so it never
names a controller) and may publish only its van's position. IronSight's own processes have
accounts of their own: ``ingest`` reads telemetry, ``backend`` (the devices and tracking workers)
reads status, acks, provisioning requests and van positions and writes commands and provisioning
responses, ``provisioning`` (the credential every new controller shares) may only ask to be
registered under its client id. Accounts an operator keeps by hand (``static.passwd`` and
``static.acl`` in the same directory, e.g. ``ironsight run``'s simulator) are copied in as they are.

Files are written atomically and only when their content changes; then the broker is told to
reload them (SIGHUP), which also disconnects clients whose credential is gone. Passwords are
hashed as Mosquitto ≥ 2 does (PBKDF2-SHA512, ``$7$``), so no ``mosquitto_passwd`` binary is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core import topics
from core.positions import position_subscription, position_topic

log = logging.getLogger(__name__)

# Mosquitto's own defaults for $7$ hashes (mosquitto_passwd 2.x): 12 bytes of salt, 101 rounds.
PBKDF2_SALT_BYTES = 12
PBKDF2_ITERATIONS = 101
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
# Accounts an operator keeps by hand, appended to the generated files as they are.
STATIC_PASSWORD_FILE = "static.passwd"
STATIC_ACL_FILE = "static.acl"
# Mosquitto (2.0) clears its reload flag after reloading, so a SIGHUP that arrives while it reloads
# is lost: after a burst of reloads the broker is signalled once more when none came for this long.
RELOAD_SETTLE_S = 1.0
# Device passwords are random: 24 bytes of entropy, URL-safe, so they survive any transport.
DEVICE_PASSWORD_BYTES = 24

INGEST_USER = "ingest"
BACKEND_USER = "backend"
PROVISIONING_USER = "provisioning"
SERVICE_USERS = (INGEST_USER, BACKEND_USER, PROVISIONING_USER)
# A van's tracker logs in as this prefix + the vehicle id. `~` is not in the equipment id alphabet
# (core.topics.EQUIPMENT_ID_PATTERN), so no controller's username (its equipment id) can take it,
# and it needs no escaping in a password file, an ACL file or an mqtt:// URL.
VEHICLE_USER_PREFIX = "vehicle~"


def tracker_username(vehicle_id: str) -> str:
    return VEHICLE_USER_PREFIX + vehicle_id


def new_password() -> str:
    return secrets.token_urlsafe(DEVICE_PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt, digest = encoded.split("$")
        if kind != "7":
            return False
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, base64.b64decode(digest))


@dataclass(frozen=True, slots=True)
class ServicePasswords:
    """Plain passwords of IronSight's own accounts (from settings); an account without one is left out."""

    ingest: str | None = None
    backend: str | None = None
    provisioning: str | None = None


@dataclass(frozen=True, slots=True)
class AuthFiles:
    passwd: str
    acl: str


@dataclass(frozen=True, slots=True)
class StaticAccounts:
    """What ``static.passwd`` and ``static.acl`` hold: password file lines, ACL file text."""

    passwd: tuple[str, ...] = ()
    acl: str = ""

    @property
    def users(self) -> set[str]:
        return {line.partition(":")[0] for line in self.passwd}


def active_device_hashes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT equipment_id, password_hash FROM devices WHERE state = 'active' ORDER BY equipment_id").fetchall()
    conn.commit()
    return [(r[0], r[1]) for r in rows]


def active_tracker_hashes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(vehicle id, $7$ hash) of every van tracker holding a credential."""
    rows = conn.execute(
        "SELECT vehicle_id, password_hash FROM vehicle_trackers WHERE state = 'active' ORDER BY vehicle_id").fetchall()
    conn.commit()
    return [(r[0], r[1]) for r in rows]


def read_static_accounts(directory: Path) -> StaticAccounts:
    passwd = _read(Path(directory) / STATIC_PASSWORD_FILE) or ""
    lines = tuple(line for line in passwd.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return StaticAccounts(lines, _read(Path(directory) / STATIC_ACL_FILE) or "")


def write_static_account(directory: Path, user: str, password: str, acl: list[str]) -> None:
    """Keep one account by hand beside the generated ones (``static.passwd``, ``static.acl``): the
    devices worker copies it into the broker's files at its next sync."""
    if ":" in user or not user or user in SERVICE_USERS:
        raise ValueError(f"{user!r} cannot be a static account")
    Path(directory).mkdir(parents=True, exist_ok=True)
    _write_atomically(Path(directory) / STATIC_PASSWORD_FILE, f"{user}:{hash_password(password)}\n")
    _write_atomically(Path(directory) / STATIC_ACL_FILE, "\n".join([f"user {user}", *acl]) + "\n")


def render(root: str, devices: list[tuple[str, str]], service_hashes: dict[str, str],
           trackers: list[tuple[str, str]] | None = None, static: StaticAccounts | None = None) -> AuthFiles:
    """The two files' text. ``devices``: (equipment id, $7$ hash); ``service_hashes``: user → $7$ hash;
    ``trackers``: (vehicle id, $7$ hash) of the vans' trackers; ``static``: accounts kept by hand."""
    static = static or StaticAccounts()
    trackers = trackers or []
    reserved = set(SERVICE_USERS) | static.users
    clashing = [equipment_id for equipment_id, _ in devices if equipment_id in reserved]
    if clashing:
        # An account of its own must never be granted to a machine named like it.
        log.error("devices left out of the broker's files: their equipment ids are reserved account names: %s",
                  ", ".join(sorted(clashing)))
        devices = [(equipment_id, h) for equipment_id, h in devices if equipment_id not in reserved]
    passwd = [f"{user}:{service_hashes[user]}" for user in SERVICE_USERS if user in service_hashes]
    passwd += list(static.passwd)
    passwd += [f"{equipment_id}:{password_hash}" for equipment_id, password_hash in devices]
    passwd += [f"{tracker_username(vehicle_id)}:{password_hash}" for vehicle_id, password_hash in trackers]
    v = topics.PROTOCOL_VERSION
    acl = ["# Generated by IronSight from its device registry: edits are overwritten.", ""]
    # Patterns apply to every user; this one lets a controller with the shared provisioning
    # credential ask, under its own client id, to be registered, and read only the answer to it.
    acl += [f"pattern write {root}/{topics.PROVISIONING}/%c/request",
            f"pattern read {root}/{topics.PROVISIONING}/%c/response", ""]
    if INGEST_USER in service_hashes:
        acl += [f"user {INGEST_USER}"]
        acl += [f"topic read {root}/{v}/+/{kind}" for kind in topics.TELEMETRY_KINDS]
        acl += [""]
    if BACKEND_USER in service_hashes:
        acl += [f"user {BACKEND_USER}",
                f"topic read {root}/{v}/+/{topics.STATUS}",
                f"topic read {root}/{v}/+/{topics.ACK}",
                f"topic write {root}/{v}/+/{topics.COMMAND}",
                f"topic read {root}/{topics.PROVISIONING}/+/request",
                f"topic write {root}/{topics.PROVISIONING}/+/response",
                # The tracking worker follows the service vans on the same account.
                f"topic read {position_subscription(root)}", ""]
    static_acl = [line for line in static.acl.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if static_acl and not static_acl[0].startswith("user "):
        # Its topics would be granted to the account above it.
        log.error("%s left out: it must begin with a `user` line", STATIC_ACL_FILE)
    elif static_acl:
        acl += [f"# Kept by hand in {STATIC_ACL_FILE}:", *static_acl, ""]
    for equipment_id, _ in devices:
        acl += [f"user {equipment_id}"]
        acl += [f"topic write {topics.device_topic(root, equipment_id, kind)}" for kind in topics.DEVICE_UPLINK_KINDS]
        acl += [f"topic read {topics.device_topic(root, equipment_id, topics.COMMAND)}", ""]
    # A van's tracker publishes its own position; it reads nothing.
    for vehicle_id, _ in trackers:
        acl += [f"user {tracker_username(vehicle_id)}", f"topic write {position_topic(root, vehicle_id)}", ""]
    return AuthFiles("\n".join(passwd) + "\n", "\n".join(acl) + "\n")


class BrokerAuthSync:
    """Keeps a Mosquitto's password and ACL files equal to the registry, and reloads the broker."""

    def __init__(self, directory: Path, root: str, passwords: ServicePasswords, pid_file: Path | None) -> None:
        self.directory = Path(directory)
        self.root = root
        self.pid_file = pid_file
        self._service_passwords = {user: pw for user, pw in (
            (INGEST_USER, passwords.ingest), (BACKEND_USER, passwords.backend),
            (PROVISIONING_USER, passwords.provisioning)) if pw}
        # Hashed once per process: a new salt at every sync would make every file look changed.
        self._service_hashes = {user: hash_password(pw) for user, pw in self._service_passwords.items()}
        self.reloads = 0
        self._burst = 0  # SIGHUPs since the burst began
        self._settle_timer: threading.Timer | None = None
        self._settle_lock = threading.Lock()

    def sync(self, conn: psycopg.Connection) -> bool:
        """Write the files if the registry changed them; True when the broker was told to reload."""
        files = render(self.root, active_device_hashes(conn), self._service_hashes, active_tracker_hashes(conn),
                       read_static_accounts(self.directory))
        passwd_path, acl_path = self.directory / PASSWORD_FILE, self.directory / ACL_FILE
        if _same_accounts(passwd_path, files.passwd, self._service_passwords) and _read(acl_path) == files.acl:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(passwd_path, files.passwd)
            _write_atomically(acl_path, files.acl)
        except OSError as exc:
            # The broker keeps its current files; the next sync tries again.
            log.error("cannot write the broker's password and ACL files in %s: %s", self.directory, exc)
            return False
        self.reloads += 1
        self._reload_broker()
        return True

    def _reload_broker(self) -> None:
        if self.pid_file is None:
            return
        self._signal_broker()
        with self._settle_lock:
            self._burst += 1
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            self._settle_timer = threading.Timer(RELOAD_SETTLE_S, self._settle)
            self._settle_timer.daemon = True
            self._settle_timer.start()

    def _settle(self) -> None:
        with self._settle_lock:
            burst, self._burst, self._settle_timer = self._burst, 0, None
        if burst > 1:
            # One of the burst's signals may have come while the broker was reloading, and been lost.
            self._signal_broker()

    def _signal_broker(self) -> None:
        try:
            pid = int(Path(self.pid_file).read_text().strip()) if self.pid_file is not None else None
            if pid is None:
                return
            os.kill(pid, signal.SIGHUP)
            log.info("broker (pid %d) told to reload its password and ACL files", pid)
        except (OSError, ValueError) as exc:
            log.error("cannot signal the broker through %s: %s", self.pid_file, exc)


def _same_accounts(path: Path, wanted: str, service_passwords: dict[str, str]) -> bool:
    """Whether the file on disk grants the same accounts. Service hashes differ between processes
    (fresh salt), so a service line counts as equal when its stored hash verifies the password."""
    current = _read(path)
    if current is None:
        return False
    if current == wanted:
        return True
    current_lines, wanted_lines = current.splitlines(), wanted.splitlines()
    if len(current_lines) != len(wanted_lines):
        return False
    for have, want in zip(current_lines, wanted_lines, strict=True):
        have_user, _, have_hash = have.partition(":")
        want_user = want.partition(":")[0]
        if have_user != want_user:
            return False
        if have_user in service_passwords:
            if not verify_password(service_passwords[have_user], have_hash):
                return False
        elif have != want:
            return False
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # missing or unreadable: written anew (or the failure to write is logged)
        return None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    # The broker runs as a user of its own (in its own container in production) and must read
    # these; they hold only salted PBKDF2 hashes, of random passwords for every device.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
