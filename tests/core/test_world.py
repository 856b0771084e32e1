import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from core.annotator import ScriptedAnnotator
from core.config import load_config
from core.world import FLAWS, TASKS, WorldConfig, corpus, demonstrations, flaw_response, is_heldout, prompts

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
            assert reply == p["reference"] and judge.is_correct(p, reply)


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
