"""Child processes of IronSight's own: ports, the parent-death signal, killing a process tree.

Shared by the embedded services (ironsight.embedded_postgres, ironsight.embedded_broker), the
supervisor and the ``--workers N`` launchers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000
_PR_SET_PDEATHSIG = 1


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_root() -> bool:
    return os.geteuid() == 0



def die_with_parent() -> None:
    """preexec_fn: ask the kernel for SIGTERM when the parent (thread) dies (Linux only)."""
    parent = os.getppid()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)



def kill_tree(process: psutil.Process) -> None:
    import psutil

    try:
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [process, *children]:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([process, *children], timeout=5)

