"""A throwaway PostgreSQL server on loopback, for the tests and `make bench-label`.

Uses Debian's `postgresql` package (`make postgres` installs it): `initdb` into a fresh data directory
(trust auth, loopback only), `postgres` in the foreground of a child process, one database per caller.
PostgreSQL refuses to run as root, so as root the server runs as the package's `postgres` user.

    with local_postgres(tmp_dir) as server:
        url = server.new_database("t1")     # postgresql://postgres@127.0.0.1:<port>/t1
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


class PostgresMissing(RuntimeError):
    pass


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PostgresMissing("PostgreSQL is not installed: run `make postgres` (apt-get install postgresql)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, port: int):
        self.port = port
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def new_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}"')
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def local_postgres(workdir: str | Path):
    """Start a server with its data directory under `workdir`; stop it (and delete the data) on exit."""
    bindir = _bin_dir()
    data = Path(workdir) / "pgdata"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        for parent in data.parents:  # the postgres user must be able to reach its data directory
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--no-instructions"], check=True, capture_output=True)
    port = _free_port()
    log = open(Path(workdir) / "postgres.log", "w")
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                             "-c", "max_connections=200", "-c", "fsync=on", "-c", "synchronous_commit=on"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(port)
    try:
        import psycopg
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                psycopg.connect(server.admin_url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise TimeoutError("postgres did not accept connections within 60 s") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()  # SIGTERM: "smart" shutdown; then fast if it lingers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
