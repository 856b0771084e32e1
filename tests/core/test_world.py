import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from core.annotator import ScriptedAnnotator, compare_answers, rubric
from core.config import load_config
from core.world import (CLOSINGS, FLAWS, SIGN_OFFS, TASKS, WorldConfig, chatter, corpus, demonstrations,
                        flaw_response, is_heldout, prompts)

ROOT = Path(__file__).resolve().parents[2]


def _digest(cfg: WorldConfig) -> str:
    train, heldout = prompts(cfg)
    blob = json.dumps([train, heldout, demonstrations(cfg, train), list(corpus(cfg))], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_same_seed_same_world_and_other_seed_differs(micro_world):
    assert _digest(micro_world) == _digest(micro_world)
    assert _digest(micro_world) != _digest(WorldConfig(**{**micro_world.__dict__, "seed": 1}))


def test_world_identical_in_another_process_with_other_hash_seed(micro_world):
    # Python's set/hash order changes with PYTHONHASHSEED; the world must not.
    code = ("from core.world import WorldConfig; from tests.core.test_world import _digest; "
            f"print(_digest(WorldConfig(**{micro_world.__dict__!r})))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    assert out.stdout.strip() == _digest(micro_world)


def test_train_and_heldout_prompts_do_not_overlap(micro_world):
    train, heldout = prompts(micro_world)
    assert heldout and train
    texts = lambda rows: {r["messages"][0]["content"] for r in rows}  # noqa: E731
    assert not texts(train) & texts(heldout)
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert all(is_heldout(r["messages"][0]["content"], micro_world.heldout_fraction) for r in heldout)
    assert set(Counter(r["task"] for r in heldout)) == set(TASKS)


def test_corpus_never_contains_a_heldout_prompt(micro_world):
    _, heldout = prompts(micro_world)
    text = "\n".join(corpus(micro_world))
    leaked = [p for p in heldout if p["messages"][0]["content"] in text]
    assert not leaked


def test_corpus_contains_the_task_formats(micro_world):
    docs = list(corpus(micro_world))
    assert any("\nQuestion: Where did" in d and "\nAnswer: " in d for d in docs)
    assert any(" plus " in d and " is " in d for d in docs)
    assert any(d.endswith("The end.") and "Here is a story about" in d for d in docs)
    assert any("The friend said: Hello" in d for d in docs)
    # the preferred closing is in the pretraining text, and so is the typical one
    text = "\n".join(docs)
    assert any(s in text for pool in SIGN_OFFS.values() for s in pool) and "By the way, " in text


def test_demonstrations_flaw_rate_and_flaws_score_lower(micro_world):
    train, _ = prompts(micro_world)
    demos = demonstrations(micro_world, train)
    rate = sum(d["flaw"] is not None for d in demos) / len(demos)
    assert abs(rate - micro_world.flawed_fraction) < 0.07
    assert set(d["flaw"] for d in demos if d["flaw"]) == set(FLAWS)
    by_id = {p["id"]: p for p in train}
    judge = ScriptedAnnotator("strict")
    for d in demos:
        p = by_id[d["prompt_id"]]
        reply = d["messages"][1]["content"]
        if d["flaw"]:
            assert judge.score(p, reply) < judge.score(p, p["reference"]), (d["flaw"], reply)
        else:
            assert reply.startswith(p["answer"]) and judge.is_correct(p, reply)
            assert judge.score(p, reply) <= judge.score(p, p["reference"])


def test_demonstrations_mix_closings_and_the_typical_one_is_not_preferred(micro_world):
    train, _ = prompts(micro_world)
    demos = demonstrations(micro_world, train)
    clean = [d for d in demos if d["flaw"] is None]
    share = {k: sum(d["closing"] == k for d in clean) / len(clean) for k in CLOSINGS}
    assert abs(share["chatter"] - micro_world.chatter_fraction) < 0.1
    assert abs(share["sign_off"] - micro_world.sign_off_fraction) < 0.1
    assert max(share, key=share.get) == "chatter"           # the modal demonstration closes with chatter
    by_id = {p["id"]: p for p in train}
    parts = lambda d: rubric(by_id[d["prompt_id"]], d["messages"][1]["content"])  # noqa: E731
    assert all(parts(d)["warmth"] == 1.0 and parts(d)["focus"] == 1.0 for d in clean if d["closing"] == "sign_off")
    assert all(parts(d)["focus"] == 0.5 and parts(d)["warmth"] == 0.5 for d in clean if d["closing"] == "chatter")


def test_ceiling_by_construction(micro_world):
    # The best answers against the demonstrations themselves (what SFT imitates): far above the 85 % goal,
    # and every loss of the demonstrations is either a failed task or a worse closing.
    train, _ = prompts(micro_world)
    demos = demonstrations(micro_world, train)
    by_id = {p["id"]: p for p in train}
    rows = [by_id[d["prompt_id"]] for d in demos]
    r = compare_answers(rows, [p["reference"] for p in rows], [d["messages"][1]["content"] for d in demos], n_boot=10)
    assert r["win_rate"] >= 0.85 and r["losses"] == 0
    back = compare_answers(rows, [d["messages"][1]["content"] for d in demos], [p["reference"] for p in rows], n_boot=10)
    assert back["losses_preference"] > back["losses_capability"] > 0


def test_preferred_is_not_simply_shorter():
    # A chatter sentence and a sign-off are of the same length (words), so length alone cannot tell them apart.
    import random
    rng = random.Random(0)
    chat = [len(chatter(rng).split()) for _ in range(200)]
    signs = [len(s.split()) for pool in SIGN_OFFS.values() for s in pool]
    assert abs(sum(chat) / len(chat) - sum(signs) / len(signs)) < 1.0


def test_wrong_answers_are_wrong_for_every_task(micro_world):
    import random
    train, _ = prompts(micro_world)
    judge, rng = ScriptedAnnotator(), random.Random(0)
    for task in TASKS:
        p = next(r for r in train if r["task"] == task)
        item = {**p, "prompt": p["messages"][0]["content"], "answer": p["reference"]}
        assert not judge.is_correct(p, flaw_response(rng, item, "wrong"))
        assert not judge.is_correct(p, flaw_response(rng, item, "generic"))


def test_tiny_corpus_has_at_least_two_million_tokens(tokenizer):
    cfg = load_config(WorldConfig, ROOT / "configs/tiny/world.yaml")
    sample = list(corpus(WorldConfig(corpus_chars=300_000, seed=7)))
    n_tokens = sum(len(ids) + 2 for ids in tokenizer(sample, add_special_tokens=False)["input_ids"])
    chars_per_token = sum(len(d) + 1 for d in sample) / n_tokens
    assert cfg.corpus_chars / chars_per_token >= 2_000_000
