"""The store: schema constraints, assignment rules, transactions, accounts."""

import json
import time

import pytest

from labeling_ui.store import ItemFull, LoginPolicy, Store, StoreError
from tests.labeling_ui.conftest import fill_store, raw_sql


def test_schema_refuses_a_second_judgment_and_over_submission_even_in_raw_sql(store):
    db, refused = raw_sql(store), store._integrity
    item = store.items()[0]
    order = json.dumps(item["candidate_ids"])
    insert = ("INSERT INTO judgments (item_id, annotator_id, shown_order, choice, submitted_at) "
              "VALUES (?, ?, ?, 'a', 0)")
    db.execute(insert, (item["id"], 1, order))
    with pytest.raises(refused, match="UNIQUE|unique"):
        db.execute(insert, (item["id"], 1, order))
    db.execute(insert, (item["id"], 2, order))  # overlap is 2: now full
    with pytest.raises(refused, match="max_judgments"):
        db.execute(insert, (item["id"], 3, order))
    with pytest.raises(refused, match="CHECK|check"):
        db.execute("INSERT INTO judgments (item_id, annotator_id, shown_order, choice, submitted_at) "
                   "VALUES (?, 3, ?, 'maybe', 0)", (store.items()[2]["id"], order))
    with pytest.raises(refused, match="CHECK|check"):  # neither a choice nor ranks
        db.execute("INSERT INTO judgments (item_id, annotator_id, shown_order, submitted_at) VALUES (?, 3, ?, 0)",
                   (store.items()[2]["id"], order))


def test_an_annotator_never_gets_an_item_twice_and_a_full_item_goes_to_nobody(store):
    seen = []
    while (shown := store.next_item("alice", "pair")) is not None:
        assert store.next_item("alice", "pair").item_id == shown.item_id  # reload: same open item
        store.submit("alice", shown.item_id, choice="a")
        seen.append(shown.item_id)
    assert len(seen) == len(set(seen)) == 4
    for _ in range(4):
        store.submit("bob", store.next_item("bob", "pair").item_id, choice="b")
    store.add_annotator("carol", "carol-password")
    assert store.next_item("carol", "pair") is None  # every pair item has its 2 judgments
    assert store.next_item("carol", "rank") is not None


def test_shown_order_is_shuffled_per_annotator_and_stored_with_the_judgment(label_db):
    store = fill_store(label_db, n_prompts=20, overlap=3)
    orders = {}
    for name in ("alice", "bob", "boss"):
        for _ in range(10):
            s = store.next_item(name, "rank")
            orders[(name, s.item_id)] = s.candidate_ids
            store.submit(name, s.item_id, ranks=[1, 2, 3, 4])
    by_item = {}
    for (name, item), order in orders.items():
        by_item.setdefault(item, set()).add(tuple(order))
    assert any(len(v) > 1 for v in by_item.values())  # annotators saw different orders
    for j in store.judgments():
        assert j["shown_order"] == orders[(j["annotator"], j["item_id"])]
        assert sorted(j["shown_order"]) == sorted(j["candidate_ids"])


def test_submit_validates_and_a_refused_submit_changes_nothing(store):
    shown = store.next_item("alice", "pair")
    for kwargs, msg in [({"choice": "maybe"}, "a pair takes a choice"), ({"ranks": [1, 2]}, "a pair takes a choice"),
                        ({"choice": "a", "flags": ["boring"]}, "unknown flag"),
                        ({"choice": "a", "correction": "x" * 5000}, "limit is 4000"),
                        ({"choice": "a", "flags": ["x" * 10_000]}, "unknown flag 'x{40}'; flags"),
                        ({"choice": "a", "correction": "5.\x00"}, r"control character \(U\+0000\) at character 3"),
                        ({"choice": "a", "correction": "5 \x1b[31mred"}, r"control character \(U\+001B\)")]:
        with pytest.raises(StoreError, match=msg):
            store.submit("alice", shown.item_id, **kwargs)
    assert store.counts()["judgments"] == 0 and store.counts()["assignments"] == 1
    with pytest.raises(StoreError, match="not assigned"):
        store.submit("bob", shown.item_id, choice="a")
    rank = store.next_item("alice", "rank")
    for ranks in ([1, 2, 3], [0, 1, 2, 3], [1, 2, 3, 5], None):
        with pytest.raises(StoreError, match="rank from 1"):
            store.submit("alice", rank.item_id, ranks=ranks)
    jid = store.submit("alice", shown.item_id, choice="both_bad", flags=["unsafe", "unsafe"], correction="  5.  ")
    j = store.judgments("alice")[0]
    assert (j["id"], j["choice"], j["flags"], j["correction"]) == (jid, "both_bad", ["unsafe"], "5.")
    with pytest.raises(StoreError, match="already judged"):
        store.submit("alice", shown.item_id, choice="a")


def test_a_ranking_marks_responses_that_fail_the_task_and_ranks_them_last(store):
    shown = store.next_item("alice", "rank")
    pair = store.next_item("alice", "pair")
    for bad, ranks, msg in [([True, False], [1, 2, 3, 4], "mark each of the 4 responses"),
                            ([1, 0, 0, 0], [4, 1, 2, 3], "mark each of the 4 responses"),
                            ([True, False, False, False], [1, 2, 3, 4], r"fails the task \(rank 1\) can not rank above one "
                                                                        r"that does it \(rank 4\); rank the failing ones last")]:
        with pytest.raises(StoreError, match=msg):
            store.submit("alice", shown.item_id, ranks=ranks, bad=bad)
    with pytest.raises(StoreError, match="both_bad says it for a pair"):
        store.submit("alice", pair.item_id, choice="a", bad=[True, False])
    assert store.counts()["judgments"] == 0
    store.submit("alice", shown.item_id, ranks=[4, 1, 2, 2], bad=[True, False, False, False])
    store.submit("alice", pair.item_id, choice="a", bad=None)
    assert [j["bad"] for j in store.judgments("alice")] == [[True, False, False, False], None]


def test_a_store_from_before_the_marks_gains_the_column_and_keeps_its_judgments(label_db):
    store = fill_store(label_db, n_prompts=2, overlap=1)  # p001 is a ranking
    shown = store.next_item("alice", "rank")
    store.submit("alice", shown.item_id, ranks=list(range(1, len(shown.texts) + 1)))
    raw_sql(store).execute("ALTER TABLE judgments DROP COLUMN bad")  # as a store written before the column existed
    store.close()
    reopened = Store(label_db)
    assert [(j["ranks"], j["bad"]) for j in reopened.judgments("alice")] == [([1, 2, 3, 4], None)]


def test_an_expired_lease_can_not_push_an_item_over_its_overlap(label_db):
    store = fill_store(label_db, n_prompts=1, overlap=2)
    store.lease_s = 0.05
    store.add_annotator("carol", "carol-password")
    holders = []
    for name in ("alice", "bob", "carol"):  # leases expire, so a third annotator gets the item too
        holders.append((name, store.next_item(name, "pair").item_id))
        time.sleep(0.1)
    store.submit("bob", holders[1][1], choice="a")
    store.submit("carol", holders[2][1], choice="b")
    with pytest.raises(ItemFull, match="your text is still in the form"):
        store.submit("alice", holders[0][1], choice="tie", correction="kept by the browser")
    assert store.counts()["judgments"] == 2


def test_accounts_store_argon2_hashes_and_verify_passwords(label_db):
    store = Store(label_db)
    store.add_annotator("ann", "correct horse")
    row = raw_sql(store).execute("SELECT password_hash FROM annotators").fetchone()[0]
    assert row.startswith("$argon2id$") and "correct horse" not in row
    assert store.verify("ann", "correct horse") and not store.verify("ann", "wrong horse")
    assert not store.verify("nobody", "correct horse")
    for name, pw, role, msg in [("ann", "another one", "annotator", "already exists"), ("x y", "longenough", "annotator", "letters"),
                                ("new", "short", "annotator", "8 characters"), ("new", "longenough", "root", "role")]:
        with pytest.raises(StoreError, match=msg):
            store.add_annotator(name, pw, role)
    store.set_password("ann", "battery staple")
    assert store.verify("ann", "battery staple")


@pytest.mark.parametrize("name, password, msg", [
    ("ann", "short", "at least 8 characters"),
    ("annabelle", "AnnaBelle", "own name"),
    ("ann", "password1", "most common passwords"),
    ("ann", "Qwertyuiop", "most common passwords"),
    ("ann", "aaaaaaaaaaaa", "most common passwords"),
])
def test_weak_passwords_are_refused_at_creation_and_reset(label_db, name, password, msg):
    store = Store(label_db)
    with pytest.raises(StoreError, match=msg):
        store.add_annotator(name, password)
    store.add_annotator(name, "plum kettle orbit")
    with pytest.raises(StoreError, match=msg):
        store.set_password(name, password)
    assert store.verify(name, "plum kettle orbit")


def test_a_weak_label_password_is_refused_by_make_user(label_db, monkeypatch, capsys):
    from labeling_ui import users
    monkeypatch.setenv("LABEL_PASSWORD", "12345678")
    with pytest.raises(SystemExit) as e:
        users.main(["--db", str(label_db), "add", "zoe"])
    assert e.value.code == 2 and "most common passwords" in capsys.readouterr().err
    assert Store(label_db).annotator("zoe") is None


def test_an_unknown_account_takes_as_long_to_refuse_as_a_wrong_password(label_db):
    import statistics
    store = Store(label_db)
    store.add_annotator("ann", "plum kettle orbit")
    store.verify("nobody", "warm-up")

    times = {"ann": [], "nobody": []}
    for i in range(20):  # taking turns, so a busy neighbour slows both alike
        for name, spent in times.items():
            t = time.perf_counter()
            assert not store.verify(name, f"guess {i}")
            spent.append(time.perf_counter() - t)
    known, unknown = (1000 * statistics.median(times[n]) for n in ("ann", "nobody"))
    assert abs(known - unknown) <= 0.25 * known, (known, unknown)


def test_reward_margins_drive_active_sampling(label_db):
    store = fill_store(label_db, n_prompts=6)
    pair_items = [i for i in store.items() if i["kind"] == "pair"]
    # make the last pair item the one the reward model separates least
    scores = {}
    for n, it in enumerate(pair_items):
        a, b = it["candidate_ids"]
        scores[a], scores[b] = 0.0, 3.0 - n
    store.set_rm_scores(scores)
    assert store.next_item("alice", "pair", active=True).item_id == pair_items[-1]["id"]
    # without active sampling: fewest judgments + live assignments first, so bob gets another item
    assert store.next_item("bob", "pair", active=False).item_id != pair_items[-1]["id"]
    margins = {i["id"]: i["margin"] for i in store.items() if i["kind"] == "pair"}
    assert margins[pair_items[0]["id"]] == 3.0 and margins[pair_items[-1]["id"]] == 1.0
    # an ensemble whose members disagree most on the first pair: that item goes first now, margin or not
    members = [dict(scores), {**scores, pair_items[0]["candidate_ids"][0]: 6.0}]
    store.set_rm_scores(scores, members)
    spread = {i["id"]: i["disagreement"] for i in store.items() if i["kind"] == "pair"}
    assert spread[pair_items[0]["id"]] == pytest.approx(3.0) and spread[pair_items[1]["id"]] == 0.0
    store.add_annotator("carol", "carol-password")
    assert store.next_item("carol", "pair", active=True).item_id == pair_items[0]["id"]


def test_a_file_that_is_not_a_store_is_one_clear_error(tmp_path):
    import subprocess
    import sys
    bad = tmp_path / "labels.db"
    bad.write_text("not sqlite")
    with pytest.raises(StoreError, match="not a usable label store"):
        Store(bad)
    r = subprocess.run([sys.executable, "-m", "labeling_ui.users", "--db", str(bad), "list"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_logins_wait_after_wrong_passwords_per_account_and_address_then_lock(label_db, monkeypatch):
    store = Store(label_db)
    store.add_annotator("ann", "plum kettle orbit")
    store.add_annotator("bob", "maple river stone")
    verified = []
    real = store.verify
    monkeypatch.setattr(store, "verify", lambda name, pw: verified.append(name) or real(name, pw))
    policy = LoginPolicy(max_failures=5, max_failures_per_address=8, window_s=0.5, lock_after=9)
    assert not any(store.login("ann", f"guess {i}", "10.0.0.1", policy) for i in range(50))
    assert verified.count("ann") == 5                                   # argon2 ran for the first five only
    assert not store.login("ann", "plum kettle orbit", "10.0.0.2", policy)  # the account waits, from anywhere
    assert store.login("bob", "maple river stone", "10.0.0.1", policy)      # another account from that address
    time.sleep(0.55)
    assert store.login("ann", "plum kettle orbit", "10.0.0.1", policy)      # the wait is over
    assert store.login_status() == []                                      # a success forgets the failures

    for i in range(8):  # one address guessing at several accounts: the address waits too
        store.login(("ann", "bob")[i % 2], f"spray {i}", "10.0.0.9", policy)
    assert not store.login("bob", "maple river stone", "10.0.0.9", policy)
    assert store.login("bob", "maple river stone", "10.0.0.3", policy)

    slow = LoginPolicy(max_failures=3, max_failures_per_address=100, window_s=0.01, lock_after=9)
    for i in range(12):  # a patient guesser at one account ends in a lock that no wait lifts
        time.sleep(0.05)
        store.login("ann", f"slow {i}", f"10.1.0.{i}", slow)
    time.sleep(0.2)
    assert not store.login("ann", "plum kettle orbit", "10.2.0.1", slow)
    assert [r["name"] for r in store.login_status() if r["locked"]] == ["ann"]
    assert store.unlock("ann") and store.login("ann", "plum kettle orbit", "10.2.0.1", slow)
    assert not store.unlock("ann")


def test_serving_beyond_loopback_prints_one_line_pointing_to_the_proxy_advice():
    from labeling_ui.app import exposure_warning
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    line = exposure_warning("0.0.0.0")
    assert "\n" not in line and "TLS reverse proxy" in line and "docs/labeling.md" in line


def test_the_audit_trail_records_logins_accounts_unlocks_and_exports_and_cannot_be_rewritten(label_db, tmp_path):
    from core.config import load_config
    from labeling_ui import export
    from labeling_ui.config import LabelConfig
    store = fill_store(label_db, users=("boss", "alice"))
    policy = LoginPolicy(max_failures=2, window_s=60)
    store.login("alice", "alice-password", "10.0.0.1", policy)
    for i in range(3):
        store.login("alice", f"guess {i}", "10.0.0.2", policy)
    store.unlock("alice", by="boss")
    store.set_password("alice", "plum kettle orbit", by="boss")
    store.submit("alice", store.next_item("alice", "pair").item_id, choice="a")
    m = export.main(load_config(LabelConfig, None, []), str(label_db), str(tmp_path / "prefs"), by="boss")
    log = store.audit_log()
    actions = [(r["actor"], r["action"], r["subject"]) for r in reversed(log)]
    assert actions == [("cli", "account_created", "boss"), ("cli", "account_created", "alice"),
                       ("alice", "login_ok", "alice"), ("alice", "login_failed", "alice"),
                       ("alice", "login_failed", "alice"), ("alice", "login_refused", "alice"),
                       ("boss", "unlock", "alice"), ("boss", "password_set", "alice"),
                       ("boss", "export", str(tmp_path / "prefs" / "train.jsonl"))]
    assert log[-3]["detail"] == {"address": "10.0.0.1"}
    exported = log[0]["detail"]
    import hashlib
    assert exported["sha256"] == hashlib.sha256((tmp_path / "prefs" / "train.jsonl").read_bytes()).hexdigest()
    assert exported["pairs_train"] + exported["pairs_test"] == m["pairs_train"] + m["pairs_test"]
    assert [r["id"] for r in store.audit_log(limit=2)] == [log[0]["id"], log[1]["id"]]
    for sql in ("UPDATE audit SET actor = 'nobody'", "DELETE FROM audit"):  # not even by hand
        with pytest.raises(Exception, match="append-only"):
            raw_sql(store).execute(sql)
    assert len(store.audit_log()) == len(log)
    store.add_arena_answers("sft", "sha-1", [{"prompt_id": "p000", "text": "5.", "decoding": {}, "seed": 0}])
    store.add_arena_answers("sft", "sha-2", [{"prompt_id": "p000", "text": "5!", "decoding": {}, "seed": 0}], by="boss")
    assert [(r["actor"], r["action"], r["subject"], r["detail"]["retired"]) for r in store.audit_log(2)] == [
        ("boss", "arena_answers", "sft", 1), ("cli", "arena_answers", "sft", 0)]  # a retrained model's reset


def test_store_has_no_sql_that_rewrites_audit_rows():
    import re
    from pathlib import Path
    import labeling_ui.store as module
    code = Path(module.__file__).read_text()
    statements = re.findall(r"(?is)\b(UPDATE|DELETE\s+FROM)\s+(\w+)", code)
    assert statements and not [s for s in statements if s[1].lower() == "audit"]


def test_sessions_end_at_logout_when_idle_and_when_the_account_changes(label_db):
    store = fill_store(label_db)
    for n, who in enumerate(("alice", "alice", "bob", "bob", "boss")):
        store.start_session(f"t{n}", who, "10.0.0.1")
    assert [store.session_user(f"t{n}", idle_s=60) for n in range(5)] == ["alice", "alice", "bob", "bob", "boss"]
    store.end_session("t0")                                        # logout: that browser only
    assert store.session_user("t0", 60) is None and store.session_user("t1", 60) == "alice"
    store.set_password("alice", "plum kettle orbit", by="boss")     # a reset ends every session of the account
    store.set_role("bob", "admin", by="boss")                       # so does a role change
    assert [store.session_user(f"t{n}", 60) for n in range(5)] == [None, None, None, None, "boss"]
    time.sleep(0.25)
    assert store.session_user("t4", idle_s=0.2) is None             # idle too long
    assert [(r["action"], r["detail"].get("sessions_ended")) for r in reversed(store.audit_log(4))] == [
        ("logout", None), ("password_set", 1), ("role_set", 2), ("session_expired", None)]
    store.start_session("t5", "boss")
    for _ in range(3):  # in use: seen often enough that it never idles out
        time.sleep(0.1)
        assert store.session_user("t5", idle_s=0.25) == "boss"
    assert store.sessions() and all(len(r) == 4 and "token_sha" not in r for r in store.sessions())


def test_a_removed_account_keeps_its_labels_but_can_not_log_in_or_submit_and_frees_its_items(label_db):
    store = fill_store(label_db)
    policy = LoginPolicy()
    done = store.next_item("alice", "pair")
    store.submit("alice", done.item_id, choice="a")
    held = store.next_item("alice", "pair")
    store.start_session("t", "alice")
    store.remove_annotator("alice", by="boss")
    assert store.session_user("t", 60) is None and not store.login("alice", "alice-password", "10.0.0.1", policy)
    assert store.annotator("alice") is None and "alice" not in {a["name"] for a in store.annotators()}
    assert [a["name"] for a in store.annotators(removed=True) if a["removed_at"]] == ["alice"]
    with pytest.raises(StoreError, match="no user 'alice'"):
        store.submit("alice", held.item_id, choice="b")
    assert [j["item_id"] for j in store.judgments("alice")] == [done.item_id]      # the label stays
    assert store.counts()["assignments"] == 0                                      # the open item is free again
    with pytest.raises(StoreError, match="already exists"):
        store.add_annotator("alice", "plum kettle orbit")
    for act in (lambda: store.remove_annotator("boss"), lambda: store.set_role("boss", "annotator")):
        with pytest.raises(StoreError, match="only admin"):
            act()
    store.set_role("bob", "admin")
    store.set_role("boss", "annotator")                                            # now there is another admin


def test_make_user_resets_passwords_changes_roles_and_removes_accounts(tmp_path):
    import subprocess
    import sys
    db = tmp_path / "labels.db"
    store = fill_store(db)
    store.start_session("t", "bob")

    def users(*args, password=None):
        env = {**__import__("os").environ, **({"LABEL_PASSWORD": password} if password else {})}
        return subprocess.run([sys.executable, "-m", "labeling_ui.users", "--db", str(db), *args],
                              capture_output=True, text=True, env=env)
    r = users("passwd", "bob", password="plum kettle orbit")
    assert r.returncode == 0 and "sessions ended" in r.stdout and store.session_user("t", 60) is None
    assert store.verify("bob", "plum kettle orbit")
    assert users("role", "bob", "--role", "admin").returncode == 0 and store.annotator("bob")["role"] == "admin"
    assert users("remove", "alice").returncode == 0
    r = users("remove", "alice")
    assert r.returncode == 2 and r.stderr.strip() == "error: no user 'alice'"
    assert users("list").stdout.split() == ["boss", "admin", "alice", "annotator", "removed", "bob", "admin"]


def test_peoples_text_is_stored_as_typed_and_strangers_login_names_as_plain_text(label_db):
    store = fill_store(label_db)
    hostile = '<script>window.__pwned = 1</script>\r\n<img src=x onerror="alert(1)">\t5 &amp; 6'
    shown = store.next_item("alice", "pair")
    store.submit("alice", shown.item_id, choice="both_bad", correction=hostile)
    assert store.judgments("alice")[0]["correction"] == hostile.replace("\r\n", "\n")  # verbatim, one line ending
    policy = LoginPolicy()
    for name in ("nobody\x00", "<img src=x onerror=alert(1)>" * 100, "\x1b[2Jboss"):  # no crash, on either backend
        assert not store.login(name, "boss-password", "10.0.0.1", policy)
    recorded = [r["subject"] for r in store.audit_log(3)][::-1]
    assert recorded == ["nobody\ufffd", ("<img src=x onerror=alert(1)>" * 100)[:200], "\ufffd[2Jboss"]
