"""The simulated fleet commissioned as a real one is, for a broker that authenticates every device.

What a commissioning engineer does for each machine, the ``sim`` process does through the device
registry: register the controller (``pending``) on its machine. Then each controller does what a
real one does (device_sim.controller): ask with the shared provisioning credential for a credential
of its own (docs/protocol.md, Provisioning), keep it in its non-volatile memory (a file in the data
directory, readable by its owner only) and connect with it from then on, on a connection of its own.
paho's network loop uses select(), which cannot watch a file descriptor above 1023, and each
connection takes three: one simulator process carries at most SIM_CONTROLLERS_PER_PROCESS of them,
and ``ironsight run`` splits a larger fleet over several (``ironsight sim --slice``).

A controller whose machine already holds a credential that its memory lost (a wiped data
directory) gets a new one from the registry, as an administrator would give it
(``POST /devices/{id}/credential``); a revoked one is left revoked and silent.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg

from device_sim.controller import CredentialStore, provision_many
from device_sim.machine import MachineSpec
from devices import registry
from devices.broker_auth import PROVISIONING_USER

log = logging.getLogger(__name__)

# Under the data directory: one file per controller (device_sim.controller.CredentialStore).
CREDENTIALS_DIR = Path("sim") / "credentials"
PROVISIONING_PARALLEL = 16
# Controllers on connections of their own per simulator process (about 3 descriptors each, below
# select()'s 1024 with room for provisioning, the database and the full-protocol controllers' own).
SIM_CONTROLLERS_PER_PROCESS = 250
# Asking again while the devices worker or the broker are still starting.
PROVISIONING_RETRY_S = 2.0
# How long a controller waits for its answer: the devices worker answers one request at a time, a
# few tens a second, and a thousand controllers asking at once queue up.
PROVISIONING_TIMEOUT_S = 30.0
# ... asking again meanwhile: a request sent before the devices worker first subscribed is lost.
PROVISIONING_ASK_AGAIN_S = 5.0


def controller_serial(spec: MachineSpec) -> str:
    """The simulated controller's own serial (what it provisions with), not the machine's."""
    return f"CTL-{spec.equipment_id}"


def register_controllers(conn: psycopg.Connection, specs: list[MachineSpec]) -> dict[str, dict]:
    """Each machine's device, registered ``pending`` where it has none: equipment id → the device."""
    devices: dict[str, dict] = {}
    for spec in specs:
        device = registry.get_device(conn, spec.equipment_id)
        conn.commit()
        if device is None:
            try:
                device = registry.create_device(conn, equipment=None, equipment_id=spec.equipment_id,
                                                serial=controller_serial(spec), firmware=None, commissioned_on=None,
                                                report_interval_s=1.0)
            except registry.RegistryError as exc:  # its serial is taken by another machine's device
                log.error("cannot register the controller of %s: %s", spec.equipment_id, exc)
                continue
        devices[spec.equipment_id] = device
    return devices


def commission(conn: psycopg.Connection, specs: list[MachineSpec], *, mqtt_url: str, topic_root: str,
               provisioning_password: str, store_dir: Path, stop: threading.Event,
               timeout_s: float = PROVISIONING_TIMEOUT_S) -> dict[str, tuple[str, str]]:
    """Every controller's own credential, provisioning those that have none: equipment id →
    (username, password). Retries while provisioning gets no answer, until ``stop``."""
    store = CredentialStore(store_dir)
    devices = register_controllers(conn, specs)
    credentials: dict[str, tuple[str, str]] = {}
    to_provision: dict[str, MachineSpec] = {}
    for spec in specs:
        device = devices.get(spec.equipment_id)
        kept = store.get(spec.equipment_id)
        if device is None:
            continue
        if device["state"] == "revoked":
            log.warning("controller of %s is revoked: it stays silent", spec.equipment_id)
            store.forget(spec.equipment_id)
        elif device["state"] == "pending":
            store.forget(spec.equipment_id)  # a credential kept from a registry that no longer has it
            to_provision[device["serial"]] = spec
        elif kept is not None:
            credentials[spec.equipment_id] = kept
        else:
            credentials[spec.equipment_id] = _reissue(conn, store, spec.equipment_id)
    started, provisioned = time.monotonic(), 0
    while to_provision and not stop.is_set():
        answers = provision_many(mqtt_url, [(serial, spec.model) for serial, spec in to_provision.items()],
                                 topic_root=topic_root, username=PROVISIONING_USER,
                                 password=provisioning_password, timeout_s=timeout_s,
                                 ask_again_s=PROVISIONING_ASK_AGAIN_S, parallel=PROVISIONING_PARALLEL, stop=stop)
        for serial, answer in answers.items():
            spec = to_provision[serial]
            if answer is None:
                continue  # no answer yet: asked again below
            del to_provision[serial]
            if answer.accepted and answer.username and answer.password:
                store.put(spec.equipment_id, answer.username, answer.password)
                credentials[spec.equipment_id] = (answer.username, answer.password)
                provisioned += 1
            elif answer.reason == "already_provisioned":
                # The answer to an earlier request of ours came after we stopped waiting: the
                # credential it carried is lost with it.
                credentials[spec.equipment_id] = _reissue(conn, store, spec.equipment_id)
            else:
                log.error("provisioning of %s (serial %s) refused: %s", spec.equipment_id, serial, answer.reason)
        if to_provision:
            log.info("%d controllers got no provisioning answer yet; asking again", len(to_provision))
            stop.wait(PROVISIONING_RETRY_S)
    log.info("%d of %d controllers hold their own credential (%d provisioned now, in %.1f s)", len(credentials),
             len(specs), provisioned, time.monotonic() - started)
    return credentials


def _reissue(conn: psycopg.Connection, store: CredentialStore, equipment_id: str) -> tuple[str, str]:
    """A new credential for an active controller that lost its own, as an administrator gives it."""
    password = registry.issue_credential(conn, equipment_id)
    store.put(equipment_id, equipment_id, password)
    log.info("controller of %s had lost its credential: a new one was issued", equipment_id)
    return equipment_id, password
