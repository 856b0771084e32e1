"""Faults of the store under a running labeling session: its disk full or read-only, SQLite locked past its
timeout, the PostgreSQL connection dropped. Each says "Not saved" with the reason, saves nothing half-way,
keeps serving, and the next submit after the fault is cleared succeeds. The disk cases use a real tiny
filesystem (a tmpfs mounted for the test: the tests run as root, as CI does)."""

import contextlib
import os
import subprocess
import threading

import pytest
from gradio_client import Client

from labeling_ui.store import Store, StoreUnavailable
from tests.labeling_ui.conftest import PASSWORDS, fill_store, raw_sql, running_app


@contextlib.contextmanager
def tiny_filesystem(path, size="4m"):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk-fault tests need root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill_disk(directory):
    """Write a file until the filesystem is full; returns it (delete it to clear the fault)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    return filler


def in_new_thread(store, fn):
    """Run fn on a fresh thread, so the store opens a new connection for it (its connections are per thread)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:
            out["error"] = e
        finally:
            store.close()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def judged(store) -> int:
    return raw_sql(store).execute("SELECT count(*) FROM judgments").fetchone()[0]


def test_a_full_disk_refuses_the_submit_with_its_reason_and_the_next_one_after_space_is_freed_saves(tmp_path):
    with tiny_filesystem(tmp_path / "disk") as disk:
        store = fill_store(disk / "labels.db", n_prompts=8)
        shown = store.next_item("alice", "pair")
        filler = fill_disk(disk)
        big = "5 plus 3 is 8. " * 260  # a correction of ~3,900 characters needs new pages
        with pytest.raises(StoreUnavailable, match=r"cannot take writes just now \(database or disk is full\)"):
            for _ in range(3):  # the journal may still hold a page or two
                store.submit("alice", shown.item_id, choice="both_bad", correction=big)
                shown = store.next_item("alice", "pair")
        before = judged(store)
        assert store.integrity() == "ok" and len(store.items()) == 8  # it still reads
        filler.unlink()
        store.submit("alice", shown.item_id, choice="both_bad", correction=big)
        assert judged(store) == before + 1 and store.integrity() == "ok"


def test_a_store_whose_directory_turned_read_only_refuses_writes_and_saves_again_once_writable(tmp_path):
    with tiny_filesystem(tmp_path / "disk") as disk:
        store = fill_store(disk / "labels.db", n_prompts=4)
        shown = store.next_item("alice", "pair")
        store.close()
        # a read-only bind mount over the directory: what a connection opened now sees after a remount
        subprocess.run(["mount", "--bind", "-o", "ro", str(disk), str(disk)], check=True)
        try:
            with pytest.raises(StoreUnavailable, match=rf"\({disk / 'labels.db'} is read-only\)"):
                in_new_thread(store, lambda: store.submit("alice", shown.item_id, choice="a"))
        finally:
            subprocess.run(["umount", str(disk)], check=True)
        assert judged(store) == 0
        assert in_new_thread(store, lambda: store.submit("alice", shown.item_id, choice="a")) > 0
        assert judged(store) == 1


def test_sqlite_locked_past_its_timeout_is_not_saved_and_saves_once_the_lock_is_gone(tmp_path):
    db = tmp_path / "labels.db"
    fill_store(db)
    store = Store(db, busy_timeout_s=0.3)
    shown = store.next_item("alice", "pair")
    other = raw_sql(store)  # another process's long write transaction
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match=r"\(database is locked\)"):
        store.submit("alice", shown.item_id, choice="a")
    other.execute("ROLLBACK")
    assert judged(store) == 0
    store.submit("alice", shown.item_id, choice="a")
    assert judged(store) == 1


def test_a_postgres_connection_dropped_mid_submit_saves_nothing_and_the_next_submit_reconnects(postgres_server):
    url = postgres_server.new_database("faults")
    store = fill_store(url)
    shown = store.next_item("alice", "pair")
    admin = raw_sql(store)
    real = store._annotator_id

    def drop_then_continue(db, name):  # the server ends the connection inside the submit's transaction
        pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
        admin.execute("SELECT pg_terminate_backend(?)", (pid,))
        return real(db, name)
    store._annotator_id = drop_then_continue
    with pytest.raises(StoreUnavailable, match="cannot take writes just now"):
        store.submit("alice", shown.item_id, choice="a")
    store._annotator_id = real
    assert judged(store) == 0
    assert store.submit("alice", shown.item_id, choice="a") > 0 and judged(store) == 1


def _vote(client, correction=""):
    return client.predict([], correction, api_name="/vote_a")[-1]


def test_the_app_says_not_saved_on_a_full_disk_keeps_serving_and_saves_once_space_is_back(tmp_path):
    with tiny_filesystem(tmp_path / "disk") as disk:
        db = disk / "labels.db"
        fill_store(db, n_prompts=20)
        with running_app(db) as (url, _):
            c = Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False)
            c.predict(api_name="/start")
            assert _vote(c).startswith("Saved judgment")
            filler = fill_disk(disk)
            said = [_vote(c, "5 plus 3 is 8. " * 260) for _ in range(3)]
            assert said[-1].startswith("Not saved: the label store cannot take writes just now (database or disk is full)")
            saved = sum(s.startswith("Saved judgment") for s in said)
            assert c.predict(api_name="/history") is not None  # still serving
            filler.unlink()
            assert _vote(c, "5 plus 3 is 8.").startswith("Saved judgment")
        assert len(Store(db).judgments("alice")) == 2 + saved   # exactly what it acknowledged


def test_the_app_says_not_saved_while_another_process_holds_the_sqlite_lock_past_app_busy_timeout_s(tmp_path):
    db = tmp_path / "labels.db"
    store = fill_store(db, n_prompts=20)
    with running_app(db, None, "app.busy_timeout_s=0.5") as (url, _):
        c = Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False)
        c.predict(api_name="/start")
        other = raw_sql(store)
        other.execute("BEGIN IMMEDIATE")  # e.g. a long export or a backup tool writing
        try:
            assert _vote(c).startswith("Not saved: the label store cannot take writes just now (database is locked)")
        finally:
            other.execute("ROLLBACK")
        assert _vote(c).startswith("Saved judgment")
    assert len(Store(db).judgments("alice")) == 1


def test_the_app_on_postgres_survives_its_connections_being_killed(postgres_server):
    url = postgres_server.new_database("faults_app")
    store = fill_store(url, n_prompts=20)
    with running_app(url) as (app_url, _):
        c = Client(app_url, auth=("alice", PASSWORDS["alice"]), verbose=False)
        c.predict(api_name="/start")
        assert _vote(c).startswith("Saved judgment")
        admin = raw_sql(store)
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert killed >= 1
        said = [_vote(c) for _ in range(3)]
        assert all(s.startswith(("Saved judgment", "Not saved: the label store cannot take writes")) for s in said)
        assert said[-1].startswith("Saved judgment")
        acked = 1 + sum(s.startswith("Saved judgment") for s in said)
    assert len(Store(url).judgments("alice")) == acked
