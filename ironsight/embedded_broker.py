"""Embedded MQTT broker, started when no broker is configured (``IRONSIGHT_MQTT_URL`` unset):
``ironsight run`` and the test suite call :func:`start_embedded_broker`.

The broker is the system's ``mosquitto`` when installed, otherwise rumqttd from the ``iotcore`` wheel,
configured with an MQTT 5 listener; Mosquitto keeps queued messages and persistent sessions under
the data directory across restarts, rumqttd keeps them in memory. Either way it runs as a child
process in its own session (a Ctrl-C in the terminal reaches only the supervisor, which stops the
services in order) that receives SIGTERM when its parent goes away. That signal is tied to the
*thread* that started the child, so start the broker from a thread that lives as long as the broker
should (the main thread).
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Literal

from core.telemetry import MAX_PAYLOAD_BYTES
from ironsight.processes import (
    LOG_TAIL_CHARS,
    STOP_TIMEOUT_S,
    die_with_parent,
    free_tcp_port,
    is_root,
    port_accepts,
)

log = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 10.0
# What an MQTT PUBLISH adds to its payload, with room to spare for IronSight's topics (rumqttd limits
# whole packets, Mosquitto's message_size_limit payloads).
RUMQTTD_PACKET_OVERHEAD_BYTES = 4096
# A secured Mosquitto's files in its auth directory (the names devices.broker_auth writes).
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
PID_FILE = "mosquitto.pid"

BrokerKind = Literal["mosquitto", "iotcore"]

# Run by `python -c` in the iotcore broker's child process. `python -c` puts the working directory
# first on sys.path, which is dropped so that a local directory cannot shadow the package. The child
# also exits when its stdin (a pipe from the parent) closes: a second guard besides PDEATHSIG.
_IOTCORE_BOOTSTRAP = """\
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import logging, os, threading
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# rumqttd reports every routed packet inside an error span: only let real trouble through.
logging.getLogger("rumqttd").setLevel(logging.CRITICAL)

def _exit_with_parent():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)

threading.Thread(target=_exit_with_parent, daemon=True).start()
try:
    from iotcore import IotCoreBroker
    IotCoreBroker(config_path=sys.argv[1]).run_forever()
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)  # not sys.exit: the stdin thread would trip interpreter shutdown
"""



def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` executable, also looking in the sbin directories off PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class EmbeddedBroker:
    """A running embedded MQTT broker (child process); :meth:`stop` terminates it."""

    def __init__(
        self,
        kind: BrokerKind,
        port: int,
        process: subprocess.Popen[bytes],
        log_path: Path,
        log_file: IO[bytes],
        log_offset: int = 0,
    ) -> None:
        self.kind: BrokerKind = kind
        self.host = "127.0.0.1"
        self.port = port
        self.url = f"mqtt://{self.host}:{port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = process
        self._log_file: IO[bytes] | None = log_file
        self._log_offset = log_offset
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of what this broker (not earlier ones sharing the log file) has logged."""
        try:
            with open(self.log_path, "rb") as file:
                file.seek(self._log_offset)
                return file.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Terminate the broker (Mosquitto saves its persistence file), kill it after ``timeout``.

        Safe to call twice.
        """
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s broker (pid %d) ignored SIGTERM for %.0fs; killing it",
                    self.kind,
                    process.pid,
                    timeout,
                )
                process.kill()
                process.wait(timeout)
        if process.stdin is not None:
            process.stdin.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        log.info("embedded %s broker on port %d stopped", self.kind, self.port)

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedBroker {self.kind} {self.url} {'running' if self.running else 'stopped'}>"


def _mosquitto_run_user() -> pwd.struct_passwd | None:
    """Started as root, mosquitto runs as the ``mosquitto`` user when there is one."""
    if not is_root():
        return None
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return None


def _make_reachable_for(directory: Path, user: pwd.struct_passwd) -> None:
    """Give ``user`` the directory (for the persistence file) and search access to its parents."""
    for path in (directory, *directory.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    for parent in directory.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so that the broker user %s can reach its data", parent, user.pw_name)
            parent.chmod(mode | stat.S_IXOTH)


def _write_mosquitto_config(work_dir: Path, port: int, run_as: pwd.struct_passwd | None,
                            auth_dir: Path | None = None) -> Path:
    config = work_dir / "mosquitto.conf"
    if auth_dir is not None:
        # Secured as in production (deploy/mosquitto/mosquitto.conf): the devices worker keeps the
        # files equal to the registry and sends SIGHUP through the pid file (devices.broker_auth).
        security = ["allow_anonymous false", f"password_file {auth_dir / PASSWORD_FILE}",
                    f"acl_file {auth_dir / ACL_FILE}", f"pid_file {auth_dir / PID_FILE}",
                    "allow_zero_length_clientid false"]
    else:
        security = ["allow_anonymous true"]
    lines = [
        "# Generated by ironsight.embedded_broker: an embedded broker for one IronSight installation.",
        f"listener {port} 127.0.0.1",
        *security,
        "persistence true",
        f"persistence_location {work_dir}/",
        "persistence_file mosquitto.db",
        "autosave_interval 30",
        # Mosquitto drops QoS 1 messages it has acknowledged once a client's queue is full, so an
        # ingest worker that is down or behind must have room: a million messages is a 2-minute
        # database outage at 8,000 msg/s, about 0.5 GB of broker memory at worst.
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        # No broker-side cap on in-flight messages: the client's Receive Maximum governs.
        "max_inflight_messages 0",
        "persistent_client_expiration 1d",
        # The largest payload any IronSight decoder accepts (telemetry's): the broker drops larger
        # ones instead of storing and forwarding them (deploy/mosquitto/mosquitto.conf says the same).
        f"message_size_limit {MAX_PAYLOAD_BYTES}",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
    ]
    if is_root() and run_as is None:
        lines.append("user root")  # no `mosquitto` user to run as: stay root rather than `nobody`
    config.write_text("\n".join(lines) + "\n")
    if run_as is not None:
        _make_reachable_for(work_dir, run_as)
    return config


def _write_rumqttd_config(work_dir: Path, port: int) -> Path:
    """rumqttd 0.20 TOML: router settings plus one MQTT 5 listener ([v5.1]) on 127.0.0.1."""
    config = work_dir / "rumqttd.toml"
    config.write_text(
        "# Generated by ironsight.embedded_broker: an embedded broker for one IronSight installation.\n"
        "id = 0\n"
        "\n"
        "[router]\n"
        "id = 0\n"
        "max_connections = 10010\n"
        "max_outgoing_packet_count = 200\n"
        # Messages live in an in-memory commit log per subscription filter: 10 x 100 MiB.
        "max_segment_size = 104857600\n"
        "max_segment_count = 10\n"
        "\n"
        "[v5.1]\n"
        'name = "v5-1"\n'
        f'listen = "127.0.0.1:{port}"\n'
        "next_connection_delay_ms = 1\n"
        "\n"
        "[v5.1.connections]\n"
        "connection_timeout_ms = 60000\n"
        # rumqttd's "payload" size is the whole packet's: the largest payload ingest takes plus room
        # for the fixed header, topic, packet id and properties.
        f"max_payload_size = {MAX_PAYLOAD_BYTES + RUMQTTD_PACKET_OVERHEAD_BYTES}\n"
        "max_inflight_count = 500\n"
        "dynamic_filters = true\n"
    )
    return config


def _launch(kind: BrokerKind, work_dir: Path, port: int, executable: str | None,
            auth_dir: Path | None = None) -> EmbeddedBroker:
    log_path = work_dir / f"{kind}.log"
    log_file = open(log_path, "ab")  # owned by the EmbeddedBroker, closed in its stop()
    log_offset = log_file.tell()  # before the child writes: the file offset is shared with it
    run_as: pwd.struct_passwd | None = None
    if kind == "mosquitto":
        assert executable is not None
        # Started as root, mosquitto would switch to its own user by itself; but a change of user
        # clears PR_SET_PDEATHSIG, so drop privileges here instead (before the prctl in preexec_fn).
        run_as = _mosquitto_run_user()
        config = _write_mosquitto_config(work_dir, port, run_as, auth_dir)
        argv = [executable, "-c", str(config)]
    else:
        config = _write_rumqttd_config(work_dir, port)
        argv = [sys.executable, "-c", _IOTCORE_BOOTSTRAP, str(config)]
    log.info("starting %s broker on 127.0.0.1:%d (config %s)", kind, port, config)
    process = subprocess.Popen(
        argv,
        cwd=work_dir,
        stdin=subprocess.PIPE,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # CPython applies user/group before calling preexec_fn, so the death signal survives.
        user=run_as.pw_uid if run_as is not None else None,
        group=run_as.pw_gid if run_as is not None else None,
        extra_groups=[] if run_as is not None else None,
        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
    )
    return EmbeddedBroker(kind, port, process, log_path, log_file, log_offset)


class _PortTaken(RuntimeError):
    """The broker exited at startup because its port was taken (retried on another port)."""


def _wait_until_listening(broker: EmbeddedBroker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process = broker._process
        if process is None or process.poll() is not None:
            code = process.returncode if process is not None else None
            broker.stop()
            tail = broker.log_tail()
            error = _PortTaken if "in use" in tail.lower() else RuntimeError
            raise error(
                f"embedded {broker.kind} broker exited with code {code} during startup "
                f"(log {broker.log_path}):\n{tail}"
            )
        if port_accepts(broker.port, broker.host):
            return
        if time.monotonic() >= deadline:
            tail = broker.log_tail()
            broker.stop()
            raise RuntimeError(
                f"embedded {broker.kind} broker did not accept connections on {broker.url} within "
                f"{timeout:.0f}s (log {broker.log_path}):\n{tail}"
            )
        time.sleep(0.02)


def start_embedded_broker(
    data_dir: Path,
    port: int | None = None,
    prefer: str = "auto",
    timeout: float = BROKER_START_TIMEOUT_S,
    auth_dir: Path | None = None,
) -> EmbeddedBroker:
    """Start an MQTT 5 broker on 127.0.0.1 and return once it accepts connections.

    ``prefer``: ``"auto"`` uses Mosquitto when installed and iotcore (rumqttd) otherwise;
    ``"mosquitto"`` or ``"iotcore"`` force one (``"mosquitto"`` fails when it is not installed).
    ``port``: ``None`` picks a free one. Config, log and (Mosquitto) persistence live in
    ``data_dir/mosquitto`` or ``data_dir/iotcore``. ``auth_dir`` (Mosquitto only): refuse anonymous
    clients and read the password and ACL files there (``passwd``, ``acl``: they must exist), with its
    pid file (``mosquitto.pid``) beside them for a SIGHUP to reload them.
    """
    if prefer not in ("auto", "mosquitto", "iotcore"):
        raise ValueError(f"prefer must be 'auto', 'mosquitto' or 'iotcore', not {prefer!r}")
    mosquitto = find_mosquitto() if prefer in ("auto", "mosquitto") else None
    if prefer == "mosquitto" and mosquitto is None:
        raise RuntimeError("mosquitto was asked for but is not installed (not on PATH nor in /usr/sbin)")
    kind: BrokerKind = "mosquitto" if mosquitto is not None else "iotcore"
    if auth_dir is not None and kind != "mosquitto":
        raise RuntimeError("a secured embedded broker needs mosquitto (rumqttd has no ACL)")

    work_dir = Path(data_dir).expanduser().resolve() / kind
    work_dir.mkdir(parents=True, exist_ok=True)

    if port is not None and port_accepts(port):
        raise RuntimeError(f"cannot start the embedded {kind} broker: port {port} on 127.0.0.1 is in use")
    # With a port of our own choosing, another process may grab it between the pick and the bind:
    # then try a fresh one.
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_tcp_port()
        broker = _launch(kind, work_dir, chosen, mosquitto, auth_dir)
        try:
            _wait_until_listening(broker, timeout)
        except _PortTaken:
            if attempt == attempts:
                raise
            log.warning("embedded %s broker failed on port %d; retrying on another port", kind, chosen)
            continue
        log.info("embedded %s broker ready at %s (pid %s)", kind, broker.url, broker.pid)
        return broker
    raise AssertionError("unreachable")

