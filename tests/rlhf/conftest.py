"""Shared by the alignment stages' tests: a micro reward model trained from the micro base model."""

import pytest

from core.config import load_config


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory, base_model_dir, pairs):
    from reward import train as reward_train
    out = tmp_path_factory.mktemp("rm")
    cfg = load_config(reward_train.RewardStageConfig, None, ["train.max_steps=2", "train.batch_size=8",
                                                              "train.max_length=128", "train.save_every=2"])
    reward_train.main(cfg, str(base_model_dir), str(pairs[0]), str(pairs[1]), str(out))
    return out / "model"


def weights(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path).model.layers[0].mlp.down_proj.weight
