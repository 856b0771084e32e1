"""Shared fixtures: a micro world and a tokenizer trained on it (seconds, built locally, no hub)."""

import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One numerics cache for the session (stages in subprocesses too), not the user's ~/.cache.
os.environ.setdefault("PIPELINE_CACHE_DIR", tempfile.mkdtemp(prefix="numerics-cache-"))
# No answer cache unless a test asks for one (`make` stages in subprocesses set their own under RUNS).
os.environ.pop("ANSWER_CACHE", None)

import pytest  # noqa: E402

from core.world import WorldConfig, corpus  # noqa: E402

MICRO_WORLD = WorldConfig(corpus_chars=400_000, heldout_corpus_chars=30_000, n_prompts=400)


@pytest.fixture(autouse=True)
def _deterministic_flag_restored():
    """The pretrain stage sets torch's process-wide deterministic mode (train.deterministic); a test that
    runs it in-process must not hand that mode to the next test."""
    import torch
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.fixture(scope="session")
def micro_world() -> WorldConfig:
    return MICRO_WORLD


@pytest.fixture(scope="session")
def tokenizer():
    from core.tokenizer import train_tokenizer
    return train_tokenizer(list(corpus(MICRO_WORLD)), vocab_size=1024)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory, micro_world):
    """The micro world written by the world stage (corpus, prompts, SFT demonstrations)."""
    from pretrain import world
    out = tmp_path_factory.mktemp("world")
    world.main(micro_world, str(out))
    return out


def micro_checkpoint(out, tokenizer, seed: int = 0):
    """An untrained micro Llama (same shape everywhere in the tests) saved as a checkpoint at `out`."""
    from core.model import ModelConfig, build_model, save_checkpoint
    cfg = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=2, max_seq_len=128)
    save_checkpoint(build_model(cfg, tokenizer, seed=seed), tokenizer, out)
    return out


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory, tokenizer):
    """An untrained micro Llama saved as a checkpoint, standing in for the pretrain stage's model/."""
    return micro_checkpoint(tmp_path_factory.mktemp("base") / "model", tokenizer, seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, tokenizer):
    """A second micro checkpoint (other weights, same tokenizer): a stand-in aligned model to compare with."""
    return micro_checkpoint(tmp_path_factory.mktemp("other") / "model", tokenizer, seed=1)


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory, tokenizer):
    """An untrained micro sequence-classification model (one score) with the world's tokenizer: a stand-in reward model."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    out = tmp_path_factory.mktemp("rm") / "model"
    conf = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, num_labels=1,
                       pad_token_id=tokenizer.pad_token_id, max_position_embeddings=128)
    LlamaForSequenceClassification(conf).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def pairs(tmp_path_factory, world_dir):
    """Preference files (train 40, test 8): the reference answer (chosen) against a flawed
    demonstration of the same prompt (rejected), as the labeling export writes them."""
    from core.data import load_rows
    flawed = {d["prompt_id"]: d for d in load_rows(world_dir / "sft.jsonl") if d.get("flaw")}
    rows = []
    for p in load_rows(world_dir / "prompts_train.jsonl"):
        if p["id"] in flawed and len(rows) < 48:
            rows.append({"prompt": p["messages"], "chosen": [{"role": "assistant", "content": p["reference"]}],
                         "rejected": [flawed[p["id"]]["messages"][-1]], "task": p["task"],
                         "agreement": 1.0 if len(rows) % 3 else 0.67})
    d = tmp_path_factory.mktemp("prefs")
    return write_pairs(d / "train.jsonl", rows[:40]), write_pairs(d / "test.jsonl", rows[40:])
