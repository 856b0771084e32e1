"""The PPO stage on micro models: it trains, its guards stop and roll back, and bad pairings fail up front."""

import shutil

import pytest
import torch

from core.config import UserError, load_config
from rlhf import ppo
from tests.rlhf.conftest import weights


def cfg(*over):
    return load_config(ppo.PPOStageConfig, None, ["ppo.steps=2", "ppo.rollout_batch=4", "ppo.minibatch=2",
                                                  "ppo.ppo_epochs=2", "ppo.max_new_tokens=6", "ppo.lr=0.001",
                                                  "eval.per_task=1", "eval.max_new_tokens=4", *over])


def run(tmp_path, base_model_dir, reward_dir, world_dir, *over):
    return ppo.main(cfg(*over), str(base_model_dir), str(reward_dir), str(world_dir / "prompts_train.jsonl"),
                    str(world_dir / "prompts_heldout.jsonl"), str(tmp_path / "ppo"))


def test_ppo_updates_the_policy_and_writes_history(tmp_path, base_model_dir, reward_dir, world_dir):
    m = run(tmp_path, base_model_dir, reward_dir, world_dir, "guards.kl_budget=1000", "guards.min_length_ratio=0",
            "guards.max_length_ratio=100")
    assert (tmp_path / "ppo/DONE").exists() and m["guard"] is None and m["steps_completed"] == 2
    assert m["history"][0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout comes from the reference itself
    assert {"score", "kl", "policy_loss", "value_loss", "clipfrac"} <= m["history"][0].keys()
    assert not torch.equal(weights(base_model_dir), weights(tmp_path / "ppo/model"))
    assert "kl" in m["vs_sft"]


def test_ppo_through_lora_moves_only_the_adapted_weights_and_saves_a_plain_checkpoint(tmp_path, base_model_dir,
                                                                                        reward_dir, world_dir):
    from safetensors.torch import load_file
    m = run(tmp_path, base_model_dir, reward_dir, world_dir, "guards.kl_budget=1000", "guards.min_length_ratio=0",
            "guards.max_length_ratio=100", "lora.enabled=true", "lora.r=4", "lora.layers=[0]",
            "lora.target_modules=[gate_proj,up_proj,down_proj]", "ppo.lr=0.01")
    assert m["steps_completed"] == 2 and m["lora"] and m["lora_merge_max_abs_logit_diff"] < 1e-4
    before, after = load_file(base_model_dir / "model.safetensors"), load_file(tmp_path / "ppo/model/model.safetensors")
    assert before.keys() == after.keys()  # merged: a stock checkpoint, no adapter keys
    assert {k for k in after if not torch.equal(before[k], after[k])} == {
        f"model.layers.0.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}


def test_ppo_scores_with_every_member_of_the_reward_ensemble(tmp_path, base_model_dir, reward_dir, world_dir):
    stage = tmp_path / "reward"
    shutil.copytree(reward_dir, stage / "model")
    shutil.copytree(reward_dir, stage / "ensemble" / "1")
    m = run(tmp_path, base_model_dir, stage / "model", world_dir, "guards.kl_budget=1000", "guards.min_length_ratio=0",
            "guards.max_length_ratio=100")
    assert m["steps_completed"] == 2
    inputs = (tmp_path / "ppo" / "config.yaml").read_text()
    assert "reward_weights_0" in inputs and "reward_weights_1" in inputs  # both members read, and fingerprinted


def test_a_kl_overrun_stops_cleanly_and_rolls_back(tmp_path, base_model_dir, reward_dir, world_dir):
    m = run(tmp_path, base_model_dir, reward_dir, world_dir, "ppo.steps=5", "ppo.lr=0.05", "guards.kl_budget=1e-6",
            "guards.min_length_ratio=0", "guards.max_length_ratio=100")
    assert m["guard"]["guard"] == "kl_budget" and m["guard"]["step"] == 1 and m["steps_completed"] == 1
    assert (tmp_path / "ppo/DONE").exists()
    # the step-0 update pushed KL over budget, so the saved policy is the last accepted one: the SFT policy
    assert torch.equal(weights(base_model_dir), weights(tmp_path / "ppo/model"))


def test_a_reward_model_with_another_tokenizer_is_refused(tmp_path, base_model_dir, reward_dir, world_dir):
    other = tmp_path / "other_rm"
    shutil.copytree(reward_dir, other)
    from core.tokenizer import train_tokenizer
    texts = ["A cat sat on a mat. The dog ran home."] * 50  # another corpus: another vocabulary
    train_tokenizer(texts, vocab_size=300).save_pretrained(other)
    with pytest.raises(UserError, match="different tokenizers"):
        run(tmp_path, base_model_dir, other, world_dir)
    assert not (tmp_path / "ppo").exists()


def test_config_checks():
    with pytest.raises(UserError, match="multiple of ppo.minibatch"):
        cfg("ppo.minibatch=3")
    with pytest.raises(UserError, match="k1 or k3"):
        cfg("ppo.kl_estimator=k2")
