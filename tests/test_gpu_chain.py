"""The gpu chain's own Makefile targets and configs, end to end on CPU, with stand-ins for every hub input.

configs/gpu is copied with only names (hub ids -> local stand-ins) and sizes (steps, batches, lengths, counts)
changed, and the test checks that nothing else differs, so what runs here is the gpu path: `init_from` adopts
a Qwen2 checkpoint with its own tokenizer instead of pretraining; SFT reads UltraChat-style rows; seeding and
PPO / RLOO roll out on UltraFeedback prompts; a Qwen2 reward model with its own tokenizer labels them
(label-auto) and votes in the arena; the reward model and DPO train on UltraFeedback pairs, the reward model
is tested on HH-RLHF transcripts; the report judges with the chain's own reward model. What this cannot show:
anything that needs a GPU (bf16 kernels, NCCL, memory at 7B).
"""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.gpu_standins import data_files, models

ROOT = Path(__file__).resolve().parents[1]
# Only these leaves may differ from configs/gpu: names of what to load, and sizes.
NAMES_AND_SIZES = {"init_from", "path", "corpus_chars", "heldout_corpus_chars", "n_prompts", "batch_size",
                   "grad_accum", "max_length", "per_task", "max_new_tokens", "prompts", "steps", "rollout_batch",
                   "minibatch", "num_generations", "perplexity_docs", "samples", "bootstrap", "n", "save_every"}


def shrink(stage: str, standins: dict) -> dict:
    return {
        "world": {"corpus_chars": 20000, "heldout_corpus_chars": 4000, "n_prompts": 200},
        "pretrain": {"init_from": str(standins["base"])},
        "sft": {"train": {"batch_size": 4, "grad_accum": 1, "max_length": 128}, "eval": {"per_task": 2, "max_new_tokens": 8}},
        "label": {"seed": {"prompts": 8, "max_new_tokens": 8}, "auto": {"judge": {"path": str(standins["judge"])}},
                  "arena": {"per_task": 4, "max_new_tokens": 8}},
        "reward": {"train": {"batch_size": 4, "grad_accum": 1, "max_length": 128}, "best_of_n": {"per_task": 1, "n": 2}},
        "dpo": {"train": {"batch_size": 4, "grad_accum": 1, "max_length": 128}, "eval": {"per_task": 2, "max_new_tokens": 8}},
        "ppo": {"ppo": {"steps": 2, "rollout_batch": 4, "minibatch": 2, "max_new_tokens": 8},
                "eval": {"per_task": 2, "max_new_tokens": 8}},
        "rloo": {"prompts": 8, "num_generations": 2, "max_new_tokens": 8, "train": {"batch_size": 4},
                 "eval": {"per_task": 2, "max_new_tokens": 8}},
        "eval": {"per_task": 4, "max_new_tokens": 8, "perplexity_docs": 4, "samples": 2, "bootstrap": 100},
    }[stage]


def merged(base: dict, over: dict, where: str) -> dict:
    """`base` with `over`'s leaves replaced; every overridden key must exist in base and be a name or a size."""
    out = dict(base)
    for k, v in over.items():
        assert k in base, f"{where}.{k} is not in configs/gpu"
        if isinstance(v, dict):
            out[k] = merged(base[k], v, f"{where}.{k}")
        else:
            assert k in NAMES_AND_SIZES, f"{where}.{k} is neither a name nor a size"
            out[k] = v
    return out


@pytest.mark.slow
def test_gpu_chain_on_cpu_with_stand_ins(tmp_path):
    files = data_files(tmp_path)
    standins = models(tmp_path, [json.loads(line)["text"] for line in files["text"].read_text().splitlines()])
    cfg = tmp_path / "configs"
    cfg.mkdir()
    for src in sorted((ROOT / "configs/gpu").glob("*.yaml")):
        base = yaml.safe_load(src.read_text())
        (cfg / src.name).write_text(yaml.safe_dump(merged(base, shrink(src.stem, standins), src.stem)))
    runs, db = tmp_path / "runs", tmp_path / "labels.db"
    make = ["make", "SCALE=gpu", f"CFG={cfg}", f"RUNS={runs}", f"DB={db}", f"CORPUS={files['text']}",
            f"HELDOUT={files['text']}", f"SFT_DATA={files['sft']}", f"PREFS_TRAIN={files['prefs']}",
            f"PREFS_TEST={files['hh']}", f"PROMPTS={files['prefs']}", f"EVAL_PROMPTS={files['prefs']}"]
    r = subprocess.run([*make, "rloo", "all"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    def metrics(stage: str) -> dict:
        assert (runs / stage / "DONE").exists(), stage
        return json.loads((runs / stage / "metrics.json").read_text())

    def architecture(stage: str) -> str:
        return json.loads((runs / stage / "model/config.json").read_text())["architectures"][0]

    assert metrics("pretrain")["init_from"] == str(standins["base"]) and "steps" not in metrics("pretrain")
    assert {architecture(s) for s in ("pretrain", "sft", "dpo", "ppo", "rloo")} == {"Qwen2ForCausalLM"}
    assert architecture("reward") == "Qwen2ForSequenceClassification"
    assert metrics("sft")["rows"]["demonstrations"] == 24                  # UltraChat-style messages
    assert metrics("seed")["prompts"] == 8 and metrics("seed")["candidates_added"] == 8 * 4
    # the stand-in judge (its own tokenizer and ChatML template) labelled every item, once
    assert metrics("label-auto")["by_annotator"] == {"auto-reward_model": 8}
    assert metrics("prefs")["pairs_train"] + metrics("prefs")["pairs_test"] > 0
    reward = metrics("reward")
    assert reward["pairs"] == {"train": 24, "test": 24}                     # UltraFeedback pairs / HH transcripts
    assert reward["label_ceiling"] is None and reward["test"]["by_kind"] == {}   # no world rubric here
    assert metrics("dpo")["pairs"] == 24 and metrics("dpo")["steps"] >= 1
    ppo = metrics("ppo")
    assert ppo["steps_completed"] + (ppo["guard"] is not None) >= 1
    assert metrics("rloo")["prompts"] == 8 and metrics("rloo")["steps"] >= 1
    arena = metrics("arena-auto")
    assert arena["by_annotator"] == {"auto-reward_model": 4 * 10}          # 4 prompts x C(5 models, 2)
    ev = metrics("eval")
    assert ev["models"] == ["base", "sft", "dpo", "ppo", "rloo"] and ev["prompts"] == 4
    assert ev["judge"]["kind"] == "reward_model" and str(runs / "reward/model") in ev["judge"]["name"]
    assert ev["ceiling"] == {} and ev["reward_model"]["label_provenance"]["automatic"] > 0
    for name in ("dpo", "ppo", "rloo"):
        for d in ev["per_model"][name]["decodings"].values():
            assert 0 <= d["vs_sft"]["win_rate"] <= 1 and "length_controlled_win_rate" in d["vs_sft"]
            assert "correct" not in d                                       # world-only figures stay out
    report = (runs / "eval/report.md").read_text()
    assert "Judge: reward model" in report and "Ceiling" not in report
