"""kill -9 the running app mid-load: every judgment it acknowledged is in the store after a restart."""

import os
import re
import signal
import threading
import time

from gradio_client import Client

from labeling_ui.store import Store
from tests.labeling_ui.conftest import PASSWORDS, fill_store, running_app

SAVED = re.compile(r"Saved judgment (\d+) \(item (\d+)")


def test_acknowledged_judgments_survive_kill_9(label_db):
    names = [f"ann{i}" for i in range(6)]
    db = label_db
    fill_store(db, n_prompts=400, overlap=3, users=["boss", *names])
    acks: list[tuple[int, int]] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop, killing = threading.Event(), threading.Event()

    def annotator(name):
        try:
            c = Client(url, auth=(name, f"{name}-password"), verbose=False)
            c.predict(api_name="/start")
            while not stop.is_set():
                status = c.predict(["nonsense"], f"fixed by {name}", api_name="/vote_a")[-1]
                m = SAVED.search(status)
                if m:  # acknowledged: the app said it saved, so it must be durable
                    with lock:
                        acks.append((int(m[1]), int(m[2])))
        except Exception as e:  # the server dies under us: expected once killed
            if not killing.is_set():
                errors.append(repr(e))

    with running_app(db) as (url, proc):
        threads = [threading.Thread(target=annotator, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acks) < 40 and time.time() < deadline:
            time.sleep(0.05)
        killing.set()
        os.killpg(proc.pid, signal.SIGKILL)  # mid-load: the annotators are still submitting
        proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert len(acks) >= 40

    with running_app(db) as (url, _):
        store = Store(db)
        assert store.integrity() == "ok"
        saved = {j["id"]: j for j in store.judgments()}
        missing = [a for a in acks if a[0] not in saved]
        assert not missing, f"acknowledged but lost: {missing}"
        assert all(saved[jid]["item_id"] == item and saved[jid]["flags"] == ["nonsense"] for jid, item in acks)
        # the restarted app serves again, and the same annotator continues where they were
        c = Client(url, auth=("ann0", PASSWORDS.get("ann0", "ann0-password")), verbose=False)
        assert c.predict(api_name="/start")[0].startswith("Signed in as **ann0**")
        assert SAVED.search(c.predict([], "", api_name="/vote_b")[-1])
