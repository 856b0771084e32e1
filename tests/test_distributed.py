"""Two processes, one stage: pretrain, SFT, reward, DPO and PPO under `accelerate launch` with the shipped DDP config, on CPU (gloo);
the FSDP config, which accelerate runs as DDP on CPU (DeepSpeed needs GPUs: `make gpu-check`).

Each rank trains on its own slice of the data, so equal weights at the end prove the gradients were
averaged; the saved model must be those weights. (`--cpu` would silently run one process; the shipped
ddp.yaml is MULTI_GPU, which falls back to gloo without GPUs.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.distributed import param_digest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def launch(module: str, *args: str, config: str = "ddp.yaml") -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "configs/accelerate" / config), "--num_processes", "2", "-m", module, *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def check_two_ranks_in_sync(out: Path, model_class=None):
    from transformers import AutoModelForCausalLM
    assert (out / "DONE").exists()
    d = json.loads((out / "metrics.json").read_text())["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo" and d["engine"] == "MULTI_CPU"
    assert d["in_sync"] and d["param_digests"][0] == d["param_digests"][1]
    saved = (model_class or AutoModelForCausalLM).from_pretrained(out / "model")
    assert param_digest(saved) == d["param_digests"][0]
    return d


def test_pretrain_ddp_two_processes(tmp_path, world_dir):
    launch("pretrain.train", "--config", str(ROOT / "configs/micro/pretrain.yaml"),
           "--corpus", str(world_dir / "corpus.jsonl"), "--heldout", str(world_dir / "corpus_heldout.jsonl"),
           "--out", str(tmp_path / "pretrain"), "train.max_steps=6")
    check_two_ranks_in_sync(tmp_path / "pretrain")
    m = json.loads((tmp_path / "pretrain/metrics.json").read_text())
    assert m["tokens_seen"] == 6 * 2 * 4 * 32  # steps x processes x per-process batch x seq_len


def test_sft_ddp_two_processes(tmp_path, world_dir, base_model_dir):
    launch("sft.train", "--config", str(ROOT / "configs/micro/sft.yaml"), "--model", str(base_model_dir),
           "--data", str(world_dir / "sft.jsonl"), "--heldout-prompts", str(world_dir / "prompts_heldout.jsonl"),
           "--out", str(tmp_path / "sft"), "train.max_steps=4", "train.epochs=1", "eval.per_task=1")
    check_two_ranks_in_sync(tmp_path / "sft")


def test_the_fsdp_config_on_cpu_runs_as_ddp_and_says_so(tmp_path, world_dir, base_model_dir):
    """accelerate turns an FSDP config into MULTI_CPU without GPUs: the stage must record (and print) both."""
    r = launch("sft.train", "--config", str(ROOT / "configs/micro/sft.yaml"), "--model", str(base_model_dir),
               "--data", str(world_dir / "sft.jsonl"), "--heldout-prompts", str(world_dir / "prompts_heldout.jsonl"),
               "--out", str(tmp_path / "sft"), "train.max_steps=4", "train.epochs=1", "eval.per_task=1",
               config="fsdp.yaml")
    d = check_two_ranks_in_sync(tmp_path / "sft")
    assert d["engine_requested"] == "FSDP" and not d["sharded"]
    assert "asked for FSDP but the stage ran as MULTI_CPU" in r.stdout + r.stderr


def test_reward_and_dpo_ddp_two_processes(tmp_path, world_dir, base_model_dir, pairs):
    from transformers import AutoModelForSequenceClassification
    train, test = map(str, pairs)
    launch("reward.train", "--config", str(ROOT / "configs/micro/reward.yaml"), "--model", str(base_model_dir),
           "--train", train, "--test", test, "--out", str(tmp_path / "reward"), "train.max_steps=3")
    check_two_ranks_in_sync(tmp_path / "reward", AutoModelForSequenceClassification)
    launch("rlhf.dpo", "--config", str(ROOT / "configs/micro/dpo.yaml"), "--model", str(base_model_dir),
           "--train", train, "--heldout-prompts", str(world_dir / "prompts_heldout.jsonl"),
           "--out", str(tmp_path / "dpo"), "eval.per_task=1")
    check_two_ranks_in_sync(tmp_path / "dpo")


def scorer(base_model_dir, out):
    """An untrained score head on the base model: the RL stages only need a scorer here."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(base_model_dir, num_labels=1)
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_ppo_ddp_two_processes(tmp_path, world_dir, base_model_dir):
    rm = scorer(base_model_dir, tmp_path / "rm")
    launch("rlhf.ppo", "--config", str(ROOT / "configs/micro/ppo.yaml"), "--model", str(base_model_dir),
           "--reward-model", str(rm), "--prompts", str(world_dir / "prompts_train.jsonl"),
           "--heldout-prompts", str(world_dir / "prompts_heldout.jsonl"), "--out", str(tmp_path / "ppo"),
           "ppo.steps=2", "ppo.rollout_batch=4", "ppo.minibatch=2", "ppo.max_new_tokens=6", "ppo.lr=0.001",
           "guards.kl_budget=1000", "guards.min_length_ratio=0", "guards.max_length_ratio=100", "eval.per_task=1")
    check_two_ranks_in_sync(tmp_path / "ppo")
