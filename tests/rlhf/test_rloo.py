"""RLOO and GRPO through TRL on micro models: the policy moves, the stage writes its artifact and effect."""

import pytest
import torch

from core.config import UserError, load_config
from rlhf import rloo
from tests.rlhf.conftest import weights


def cfg(*over):
    return load_config(rloo.RLOOStageConfig, None, ["prompts=8", "num_generations=2", "max_new_tokens=6",
                                                    "train.max_steps=2", "train.batch_size=4", "train.lr=0.01",
                                                    "train.save_every=2", "eval.per_task=1", "eval.max_new_tokens=4",
                                                    *over])


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_critic_free_methods_move_the_policy(tmp_path, base_model_dir, reward_dir, world_dir, method):
    out = tmp_path / method
    m = rloo.main(cfg(f"method={method}"), str(base_model_dir), str(reward_dir), str(world_dir / "prompts_train.jsonl"),
                  str(world_dir / "prompts_heldout.jsonl"), str(out))
    assert (out / "DONE").exists() and m["method"] == method and m["steps"] == 2
    assert m["reward_first_logged"] is not None and "kl" in m["vs_sft"]
    assert not torch.equal(weights(base_model_dir), weights(out / "model"))


def test_group_size_must_divide_the_batch():
    with pytest.raises(UserError, match="divide train.batch_size"):
        cfg("num_generations=3")
    with pytest.raises(UserError, match="rloo or grpo"):
        cfg("method=ppo")
