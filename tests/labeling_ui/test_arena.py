"""The arena: blind matches between models' answers, votes stored with sides, retrained models, scripted votes."""

import json
import random
from collections import Counter

import pytest

from core.config import load_config
from labeling_ui import arena
from labeling_ui.config import LabelConfig
from labeling_ui.store import Store, StoreError

PROMPTS = [{"id": f"h{i}", "messages": [{"role": "user", "content": f"What is {i} plus 1?"}], "task": "arithmetic",
            "expected": i + 1, "a": i, "b": 1, "op": "plus", "reference": f"{i} plus 1 is {i + 1}."} for i in range(2)]


@pytest.fixture
def store(label_db):
    s = Store(label_db)
    for name in ("alice", "bob"):
        s.add_annotator(name, f"{name}-password")
    s.add_prompts(PROMPTS)
    for model in ("sft", "dpo", "ppo"):
        s.add_arena_answers(model, f"{model}-sha", [{"prompt_id": p["id"], "text": f"{model} says {p['id']}",
                                                     "decoding": {"temperature": 0.7}, "seed": 1} for p in PROMPTS])
    return s


def test_matches_are_blind_pairs_of_models_and_votes_keep_their_sides(store):
    m = store.next_match("alice", random.Random(0))
    assert m.left != m.right and m.prompt["id"] in ("h0", "h1")
    assert store.next_match("alice").left == m.left                        # a reload shows the same match
    assert all(m.prompt["id"] in t for t in m.texts) and m.texts[0] != m.texts[1]
    v = store.arena_vote("alice", m.left, m.right, "a")
    assert v["left_model"] in m.texts[0] and v["right_model"] in m.texts[1] and v["left_model"] != v["right_model"]
    with pytest.raises(StoreError, match="not the one open"):
        store.arena_vote("alice", m.left, m.right, "a")                    # no second vote on the same match
    row = store.arena_votes()[0]
    assert (row["left_answer"], row["right_answer"], row["choice"], row["annotator"]) == (m.left, m.right, "a", "alice")
    assert row["shown_at"] <= row["voted_at"]
    with pytest.raises(StoreError, match="a vote is one of"):
        store.arena_vote("bob", m.left, m.right, "left")


def test_every_pair_once_per_annotator_fewest_votes_first_sides_random(store):
    seen, lefts = set(), []
    while (m := store.next_match("alice", random.Random(len(seen)))) is not None:
        key = frozenset((m.left, m.right))
        assert key not in seen
        seen.add(key)
        lefts.append(m.left)
        store.arena_vote("alice", m.left, m.right, "tie")
    assert len(seen) == 2 * 3                                              # 2 prompts x C(3, 2) model pairs
    first = store.next_match("bob")
    assert frozenset((first.left, first.right)) in seen                    # bob starts where the fewest votes are
    sides = Counter(v["left_model"] for v in store.arena_votes())
    assert len(sides) > 1                                                  # not one model always on the left


def test_a_retrained_model_replaces_its_answers_and_old_votes_are_kept_aside(store):
    m = store.next_match("alice", random.Random(1))
    store.arena_vote("alice", m.left, m.right, "b")
    voted = {store.arena_votes()[0]["left_model"], store.arena_votes()[0]["right_model"]}
    model = sorted(voted)[0]
    store.add_arena_answers(model, "new-sha", [{"prompt_id": p["id"], "text": f"{model} v2 {p['id']}",
                                                "decoding": {}, "seed": 1} for p in PROMPTS])
    assert store.arena_votes() == [] and len(store.arena_votes(current_only=False)) == 1
    assert {a["checkpoint_sha"] for a in store.arena_answers() if a["model"] == model} == {"new-sha"}


def test_seed_and_scripted_votes_on_micro_models(tmp_path, base_model_dir, other_model_dir, world_dir):
    cfg = load_config(LabelConfig, None, ["arena.per_task=2", "arena.max_new_tokens=6"])
    db, prompts = tmp_path / "l.db", str(world_dir / "prompts_heldout.jsonl")
    models = {"sft": str(base_model_dir), "dpo": str(other_model_dir)}
    m = arena.seed(cfg, models, prompts, str(db), str(tmp_path / "arena-seed"))
    assert m["prompts"] == 8 and all(v["answers_added"] == 8 for v in m["models"].values())
    assert (tmp_path / "arena-seed/DONE").exists()
    again = arena.seed(cfg, models, prompts, str(db), str(tmp_path / "arena-seed"))
    assert all(v["answers_added"] == 0 for v in again["models"].values())
    votes = arena.auto(cfg, str(db), str(tmp_path / "arena-auto"))
    assert votes["votes_added"] == 3 * 8 and votes["votes_current"] == 24    # 3 scripted annotators x 8 matches
    assert sum(votes["choices"].values()) == 24


def test_seed_refuses_a_single_model(tmp_path, base_model_dir, world_dir):
    from core.config import UserError
    cfg = load_config(LabelConfig, None, [])
    with pytest.raises(UserError, match="at least two models"):
        arena.seed(cfg, {"sft": str(base_model_dir)}, str(world_dir / "prompts_heldout.jsonl"), str(tmp_path / "l.db"),
                   str(tmp_path / "out"))


def test_arena_on_a_prompt_set_outside_the_world_voted_by_a_reward_model(tmp_path, base_model_dir, other_model_dir,
                                                                         reward_model_dir):
    from core.config import UserError
    src = tmp_path / "uf.jsonl"
    src.write_text("".join(json.dumps({"prompt_id": f"u{i}", "prompt": f"Tell me about {w}."}) + "\n"
                           for i, w in enumerate(["cats", "rain", "bread"])))
    over = ["arena.per_task=2", "arena.max_new_tokens=6", "prompt_source.prompt=prompt", "prompt_source.id=prompt_id"]
    db, models = tmp_path / "l.db", {"sft": str(base_model_dir), "dpo": str(other_model_dir)}
    m = arena.seed(load_config(LabelConfig, None, over), models, str(src), str(db), str(tmp_path / "arena-seed"))
    assert m["prompts"] == 2       # rows without a task count as one task: arena.per_task of them
    with pytest.raises(UserError, match="not a world prompt"):
        arena.auto(load_config(LabelConfig, None, over), str(db), str(tmp_path / "arena-auto"))
    judged = load_config(LabelConfig, None, over + ["auto.judge.kind=reward_model", f"auto.judge.path={reward_model_dir}"])
    votes = arena.auto(judged, str(db), str(tmp_path / "arena-auto"))
    assert votes["by_annotator"] == {"auto-reward_model": 2} and votes["votes_current"] == 2
