"""The reward stage on a micro model: trains, writes a stock-loadable reward model, refuses bad pairs up front."""

import pytest
import torch

from core.config import UserError, load_config
from core.data import load_preferences
from reward import train as reward_train
from tests.conftest import write_pairs


def cfg(**over):
    return load_config(reward_train.RewardStageConfig, None,
                       ["train.max_steps=3", "train.batch_size=8", "train.lr=0.01", "train.max_length=128",
                        "train.save_every=2", *[f"{k}={v}" for k, v in over.items()]])


def test_reward_stage_trains_and_writes_a_stock_reward_model(tmp_path, base_model_dir, world_dir, pairs):
    from transformers import AutoModelForSequenceClassification

    from core.reward import load_reward_model, reward_scores
    out = tmp_path / "reward"
    m = reward_train.main(cfg(**{"best_of_n.per_task": 1, "best_of_n.n": 2, "best_of_n.max_new_tokens": 4}),
                          str(base_model_dir), str(pairs[0]), str(pairs[1]), str(out),
                          heldout_prompts=str(world_dir / "prompts_heldout.jsonl"))
    assert (out / "DONE").exists() and m["steps"] == 3 and m["pairs"] == {"train": 40, "test": 8}
    assert {"accuracy", "mean_margin", "by_task", "by_agreement"} <= m["test"].keys()
    assert set(m["test"]["by_agreement"]) == {"unanimous", "majority"}
    bon = m["best_of_n_vs_sft"]
    assert bon["samples_per_prompt"] == 2 and bon["n"] == 4 and bon["ci95"][0] <= bon["win_rate"] <= bon["ci95"][1]
    stock = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert stock.config.num_labels == 1 and stock.config.pad_token_id is not None
    rm, tok = load_reward_model(out / "model")
    assert tok.pad_token_id == stock.config.pad_token_id != tok.eos_token_id
    # trained: the backbone moved away from the SFT weights it started from
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    w0, w1 = base.model.layers[0].self_attn.q_proj.weight, rm.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w0, w1)
    conv = [[{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}]]
    assert len(reward_scores(rm, tok, conv * 3)) == 3


@pytest.mark.parametrize("case, rows, message", [
    ("empty", [], "no preference rows"),
    ("one-sided", [{"prompt": "q", "chosen": "a"}], "one-sided"),
    ("same", [{"prompt": "q", "chosen": "same answer", "rejected": "same answer"}], "equals 'rejected'"),
    ("shape", [{"prompt": "q", "chosen": {"x": 1}, "rejected": "b"}], "must be text or lists"),
])
def test_bad_pairs_fail_before_training(tmp_path, base_model_dir, pairs, case, rows, message):
    bad = write_pairs(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=message):
        reward_train.main(cfg(), str(base_model_dir), str(bad), str(pairs[1]), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_preference_forms_load_as_one_conversational_form(tmp_path):
    rows = [{"prompt": "What is 1 plus 1?", "chosen": "2.", "rejected": "3."},
            {"chosen": "Human: hi\n\nAssistant: hello", "rejected": "Human: hi\n\nAssistant: go away"},
            {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}]
    got = load_preferences(write_pairs(tmp_path / "p.jsonl", rows))
    assert got[0]["prompt"] == [{"role": "user", "content": "What is 1 plus 1?"}]
    assert got[0]["chosen"] == [{"role": "assistant", "content": "2."}]
    assert got[1]["prompt"] == [{"role": "user", "content": "hi"}] and got[1]["rejected"][0]["content"] == "go away"
    assert got[2]["prompt"] == [{"role": "user", "content": "q"}] and got[2]["chosen"][0]["content"] == "a"


def test_ensemble_members_are_trained_saved_and_reported(tmp_path, base_model_dir, pairs):
    from core.reward import ensemble_members, load_reward_model
    out = tmp_path / "reward"
    m = reward_train.main(cfg(**{"ensemble": 2, "best_of_n.per_task": 0}), str(base_model_dir), str(pairs[0]),
                          str(pairs[1]), str(out))
    e = m["ensemble"]
    assert e["members"] == 2 and len(e["member_accuracy"]) == 2 and e["member_accuracy"][0] == m["test"]["accuracy"]
    assert ensemble_members(out / "model") == [out / "model", out / "ensemble" / "1"]
    a, b = (load_reward_model(p)[0] for p in ensemble_members(out / "model"))
    assert not torch.equal(a.score.weight, b.score.weight)      # own seed: own head and batch order
    # a rerun with one member leaves no stale member behind for `make seed` to pick up
    reward_train.main(cfg(**{"best_of_n.per_task": 0}), str(base_model_dir), str(pairs[0]), str(pairs[1]), str(out))
    assert ensemble_members(out / "model") == [out / "model"]


def test_ensemble_report_on_hand_made_scores():
    rows = [{"task": "t"}, {"task": "t"}]
    r = reward_train.ensemble_report(rows, [[(1.0, 0.0), (0.0, 1.0)], [(1.0, 0.0), (1.0, 0.0)]])
    assert r["member_accuracy"] == [0.5, 1.0]
    assert r["mean_score_accuracy"] == 0.5            # pair 2: mean margin 0 is not a win
    assert r["pairs_members_disagree_on"] == 0.5 and r["mean_margin_std"] == pytest.approx(0.707, abs=1e-3)


def test_reward_model_learns_the_preferred_closing_above_chance(tmp_path, base_model_dir, world_dir):
    # A fixed labelled set: the same right answer with the kind sign-off (chosen) or off-topic chatter
    # (rejected): the world's preference, nothing else differs. 160 train / 40 held-out prompts.
    import random

    from core.data import load_rows
    from core.world import chatter, with_closing
    rng = random.Random(0)
    rows = [{"prompt": p["messages"], "chosen": [{"role": "assistant", "content": p["reference"]}],
             "rejected": [{"role": "assistant", "content": with_closing(p["answer"], chatter(rng))}],
             "task": p["task"], "agreement": 1.0}
            for p in load_rows(world_dir / "prompts_train.jsonl")[:200]]
    train, test = write_pairs(tmp_path / "train.jsonl", rows[:160]), write_pairs(tmp_path / "test.jsonl", rows[160:])
    m = reward_train.main(cfg(**{"train.max_steps": 40, "train.lr": 0.003, "train.batch_size": 16,
                                 "train.save_every": 100, "best_of_n.per_task": 0}),
                          str(base_model_dir), str(train), str(test), str(tmp_path / "reward"))
    # (an untrained head already separates two systematically different closings, in one direction or the
    # other: the check is the trained accuracy and margin)
    assert m["test"]["accuracy"] >= 0.9 and m["test"]["mean_margin"] > 0.5, m["test"]


def test_accuracy_is_split_by_kind_of_pair_with_its_label_ceiling():
    rows = [{"task": "arithmetic", "kind": "capability", "rubric_agrees": 1.0},
            {"task": "arithmetic", "kind": "capability", "rubric_agrees": 1.0},
            {"task": "greeting", "kind": "preference", "rubric_agrees": 0.0},
            {"task": "greeting", "kind": "preference", "rubric_agrees": 1.0},
            {"task": "greeting"}]
    scores = [(1.0, 0.0), (0.0, 1.0), (2.0, 0.0), (3.0, 0.0), (1.0, 0.0)]
    from core.reward import accuracy_report
    r = accuracy_report(rows, scores)
    assert r["by_kind"]["capability"] == {"pairs": 2, "accuracy": 0.5, "mean_margin": 0.0, "label_ceiling": 1.0}
    assert r["by_kind"]["preference"] == {"pairs": 2, "accuracy": 1.0, "mean_margin": 2.5, "label_ceiling": 0.5}
    assert r["pairs"] == 5 and r["label_ceiling"] == 0.75 and r["by_task"]["greeting"]["label_ceiling"] == 0.5
    assert r["capability_by_style"] == {}  # rows exported before the field carry no split


def test_capability_pairs_are_split_by_whether_the_style_points_the_other_way():
    rows = [{"kind": "capability", "style_against": True}, {"kind": "capability", "style_against": True},
            {"kind": "capability", "style_against": False}, {"kind": "preference", "style_against": None}]
    from core.reward import accuracy_report
    r = accuracy_report(rows, [(0.0, 1.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0)])
    assert {k: (v["pairs"], v["accuracy"]) for k, v in r["capability_by_style"].items()} == {
        "style against": (2, 0.5), "style with": (1, 1.0)}
