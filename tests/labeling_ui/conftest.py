"""Fixtures for the labeling app: a store filled without any model, on SQLite and on a real PostgreSQL server
started for the session (Debian's postgresql, loopback, throwaway data directory), and the app as a real server
process."""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from labeling_ui.store import Store
from tools.pg_local import local_postgres

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ['<script>window.__pwned = 1</script>5.', '<img src=x onerror="window.__pwned = 1">2 plus 3 is 5.']
PASSWORDS = {"boss": "boss-password", "alice": "alice-password", "bob": "bob-password"}


def fill_store(path, n_prompts: int = 8, k: int = 4, overlap: int = 2, users=("boss", "alice", "bob")) -> Store:
    """Arithmetic prompts with k canned candidates each; even prompts become pair items, odd ones rank items."""
    store = Store(path)
    for name in users:
        store.add_annotator(name, PASSWORDS.get(name, f"{name}-password"), "admin" if name == "boss" else "annotator")
    for i in range(n_prompts):
        a, b = i + 2, 3
        pid = f"p{i:03d}"
        store.add_prompts([{"id": pid, "messages": [{"role": "user", "content": f"How much is {a} plus {b}?"}],
                          "task": "arithmetic", "expected": a + b, "a": a, "b": b, "op": "plus",
                          "reference": f"{a} plus {b} is {a + b}."}])
        texts = [f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b + 1}.", "Ugh, go away.", "I like the park."]
        if i == 0:
            texts[:2] = HOSTILE
        store.add_candidates([{"prompt_id": pid, "text": t, "checkpoint": "test", "checkpoint_sha": "0" * 64,
                               "decoding": {"temperature": 1.0}, "seed": j} for j, t in enumerate(texts[:k])])
        ids = [c["id"] for c in store.candidates(pid)]
        store.add_item(pid, "pair" if i % 2 == 0 else "rank", ids[:2] if i % 2 == 0 else ids, overlap)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(db, port: int | None = None, *overrides: str, models: dict | None = None):
    """`python -m labeling_ui.app` as a subprocess; yields (url, process). Killed on exit.
    `models` ({name: checkpoint dir}) go to the Playground tab."""
    port = port or free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = tempfile.NamedTemporaryFile("w", prefix="app-", suffix=f".{port}.log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "labeling_ui.app", "--config", str(ROOT / "configs/tiny/label.yaml"),
                             "--db", str(db), *(f"--model={n}={p}" for n, p in (models or {}).items()),
                             f"app.port={port}", *overrides],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"app did not answer on {url} within 90 s") from None
                time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    with local_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def label_db(request, tmp_path):
    """An empty label store location on each backend: a SQLite path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "labels.db"
    return request.getfixturevalue("postgres_server").new_database(f"labels{next(_databases)}")


def raw_sql(store: Store):
    """A connection to the store's database that bypasses the Store API (same `?` placeholders on both)."""
    if store.postgres:
        from labeling_ui.store import _Postgres
        return _Postgres(store._url)
    import sqlite3
    return sqlite3.connect(store.path, isolation_level=None)


@pytest.fixture
def store(label_db):
    return fill_store(label_db)
