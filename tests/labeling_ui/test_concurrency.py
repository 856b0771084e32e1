"""20 simulated annotators submitting at once: zero lost, zero duplicated, zero over-submitted judgments."""

import multiprocessing as mp
import threading
import time
from collections import Counter

import pytest

from labeling_ui.store import ItemFull, Store, StoreError
from tests.labeling_ui.conftest import fill_store

N_ANNOTATORS, SECONDS = 20, 6.0


def annotate(db: str, name: str, lease_s: float, deadline: float) -> tuple[list[tuple[int, int]], int]:
    """Take and judge items until none is left or time is up; returns acknowledged (judgment id, item id) and refusals."""
    store = Store(db, lease_s=lease_s)
    acks, refused = [], 0
    kinds = ["pair", "rank"]
    while kinds and time.time() < deadline:
        kind = kinds[len(acks) % len(kinds)]
        shown = store.next_item(name, kind)
        if shown is None:
            kinds.remove(kind)
            continue
        try:
            if kind == "pair":
                jid = store.submit(name, shown.item_id, choice="a", correction=f"{name} on {shown.item_id}")
            else:
                jid = store.submit(name, shown.item_id, ranks=list(range(1, len(shown.texts) + 1)))
            acks.append((jid, shown.item_id))
        except ItemFull:
            refused += 1
    store.close()
    return acks, refused


def _worker(args):
    return annotate(*args)


def check(db, acks: list[tuple[int, int]], names: list[str]) -> Counter:
    store = Store(db)
    rows = {j["id"]: j for j in store.judgments()}
    assert len(rows) == len(acks), "a judgment was lost or written without an acknowledgment"
    assert all(rows[jid]["item_id"] == item for jid, item in acks)
    pairs = Counter((j["item_id"], j["annotator"]) for j in rows.values())
    assert max(pairs.values()) == 1, "an annotator judged an item twice"
    per_item = Counter(j["item_id"] for j in rows.values())
    items = {i["id"]: i for i in store.items()}
    assert all(per_item[i] <= items[i]["max_judgments"] for i in per_item), "an item was over-submitted"
    assert store.integrity() == "ok"
    assert {j["annotator"] for j in rows.values()} <= set(names)
    return per_item


@pytest.mark.parametrize("lease_s", [1800.0, 0.0], ids=["leases", "no-leases-every-submit-races"])
def test_twenty_threads(label_db, lease_s):
    names = [f"ann{i:02d}" for i in range(N_ANNOTATORS)]
    db = label_db
    fill_store(db, n_prompts=60, overlap=3, users=names)
    results = [None] * N_ANNOTATORS
    deadline = time.time() + SECONDS

    def run(i):
        results[i] = annotate(str(db), names[i], lease_s, deadline)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_ANNOTATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acks = [a for r in results for a in r[0]]
    per_item = check(db, acks, names)
    assert len(acks) == 60 * 3 and set(per_item.values()) == {3}  # and every slot got filled in time


def test_twenty_processes(label_db):
    names = [f"ann{i:02d}" for i in range(N_ANNOTATORS)]
    db = label_db
    fill_store(db, n_prompts=40, overlap=3, users=names)
    deadline = time.time() + SECONDS + 10  # process start-up included
    with mp.get_context("spawn").Pool(N_ANNOTATORS) as pool:
        results = pool.map(_worker, [(str(db), n, 0.0, deadline) for n in names])
    acks = [a for r in results for a in r[0]]
    per_item = check(db, acks, names)
    assert len(acks) == 40 * 3 and set(per_item.values()) == {3}


def test_a_store_error_never_leaves_a_half_written_judgment(label_db):
    store = fill_store(label_db, n_prompts=2)
    shown = store.next_item("alice", "pair")
    with pytest.raises(StoreError):
        store.submit("alice", shown.item_id, choice="a", flags=["nope"])
    assert store.counts()["judgments"] == 0 and store.counts()["assignments"] == 1
