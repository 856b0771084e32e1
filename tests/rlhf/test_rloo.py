"""RLOO and GRPO through TRL on micro models: the policy moves, the stage writes its artifact and effect."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from core.config import UserError, load_config
from rlhf import rloo
from tests.rlhf.conftest import weights


def cfg(*over):
    return load_config(rloo.RLOOStageConfig, None, ["prompts=8", "num_generations=2", "max_new_tokens=6",
                                                    "train.max_steps=2", "train.batch_size=4", "train.lr=0.01",
                                                    "train.save_every=2", "eval.per_task=1", "eval.max_new_tokens=4",
                                                    *over])


@pytest.mark.parametrize("method, members, lora", [("rloo", 2, False), ("grpo", 1, True)])
def test_critic_free_methods_move_the_policy(tmp_path, base_model_dir, reward_dir, world_dir, method, members, lora):
    out, stage = tmp_path / method, tmp_path / "reward"
    for i in range(members):  # the reward stage's layout: model/, then ensemble/1 ...
        shutil.copytree(reward_dir, stage / ("model" if i == 0 else f"ensemble/{i}"))
    over = ["lora.enabled=true", "lora.r=4", "lora.target_modules=[gate_proj,up_proj,down_proj]", "lora.layers=[0]"]
    m = rloo.main(cfg(f"method={method}", *(over if lora else [])), str(base_model_dir), str(stage / "model"),
                  str(world_dir / "prompts_train.jsonl"), str(world_dir / "prompts_heldout.jsonl"), str(out))
    assert (out / "DONE").exists() and m["method"] == method and m["steps"] == 2
    assert (f"reward_weights_{members - 1}" in (out / "config.yaml").read_text())  # every member is read
    assert m["reward_first_logged"] is not None and "kl" in m["vs_sft"]
    assert m["guards"]["guard"] is None and [c["step"] for c in m["guards"]["checks"]] == [2]  # checked at the end
    assert not torch.equal(weights(base_model_dir), weights(out / "model"))
    if lora:  # merged into a plain checkpoint, and only the adapted weights moved
        assert m["lora"] and m["lora_merge_max_abs_logit_diff"] < 1e-4
        before, after = load_file(base_model_dir / "model.safetensors"), load_file(out / "model" / "model.safetensors")
        assert before.keys() == after.keys()
        moved = {k for k in after if not torch.equal(before[k], after[k])}
        assert moved == {f"model.layers.0.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}


def test_group_size_must_divide_the_batch():
    with pytest.raises(UserError, match="divide train.batch_size"):
        cfg("num_generations=3")
    with pytest.raises(UserError, match="rloo or grpo"):
        cfg("method=ppo")
