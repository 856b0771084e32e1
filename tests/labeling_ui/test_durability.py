"""kill -9 the running app mid-load: every judgment it acknowledged is in the store after a restart."""

import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

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


def test_fifty_wrong_logins_through_the_app_wait_without_argon2_and_others_log_in(tmp_path):
    import statistics
    import urllib.parse

    db = tmp_path / "labels.db"
    fill_store(db)

    def login(url: str, name: str, password: str) -> tuple[int, float]:
        body = urllib.parse.urlencode({"username": name, "password": password}).encode()
        t = time.perf_counter()
        try:
            code = urllib.request.urlopen(urllib.request.Request(f"{url}/login", data=body), timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        return code, time.perf_counter() - t

    with running_app(db, None, "app.login.window_s=3") as (url, _):
        tries = [login(url, "alice", f"guess {i}") for i in range(50)]
        assert all(code == 400 for code, _ in tries)                       # one answer for every refusal
        first, later = statistics.median(t for _, t in tries[:5]), statistics.median(t for _, t in tries[10:])
        assert later < first / 2, (first, later)                          # refused before argon2
        assert login(url, "bob", "bob-password")[0] == 200
        assert login(url, "alice", "alice-password")[0] == 400            # still waiting
        time.sleep(3.2)
        assert login(url, "alice", "alice-password")[0] == 200
    store = Store(db)
    assert store.login_status() == []


def test_a_session_idles_out_through_the_app_and_the_store_keeps_only_its_token_hash(tmp_path):
    import hashlib
    import http.cookiejar
    import urllib.parse

    db = tmp_path / "labels.db"
    fill_store(db)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def status(url: str) -> int:
        try:
            return browser.open(url, timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    with running_app(db, None, "app.session_idle_s=2") as (url, _):
        body = urllib.parse.urlencode({"username": "alice", "password": PASSWORDS["alice"]}).encode()
        assert browser.open(f"{url}/login", body, timeout=10).status == 200
        token = next(c.value for c in jar if c.name.startswith("access-token-"))
        sha = hashlib.sha256(token.encode()).hexdigest()
        raw = Store(db)._db().execute("SELECT token_sha FROM sessions").fetchall()
        assert [r[0] for r in raw] == [sha]                               # the hash, never the token
        for _ in range(3):  # in use, it stays open past the idle limit
            assert status(f"{url}/config") == 200
            time.sleep(0.9)
        time.sleep(2.3)
        assert status(f"{url}/config") == 401                             # idle: ended
        assert Store(db).audit_log(1)[0]["action"] == "session_expired"
