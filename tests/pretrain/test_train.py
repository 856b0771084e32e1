"""Pretrain smoke tests: a micro world and model, a few steps, real assertions on what changed."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import pretrain.train as pt
from core.config import UserError, load_config
from core.model import count_params, load_causal_lm

ROOT = Path(__file__).resolve().parents[2]
MICRO = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2",
         "model.num_kv_heads=2", "model.max_seq_len=64", "train.seq_len=32", "train.batch_size=4",
         "train.max_steps=12", "train.warmup_steps=2", "train.lr=0.01", "train.eval_every=6", "train.eval_batches=2",
         "train.save_every=4", "train.log_every=1", "train.compile=false", "train.sample_tokens=8",
         "tokenizer.train_chars=200000", "train.sample_prompts=[One day]", "train.probe_per_task=2"]


def run(world_dir, out, *extra):
    cfg = load_config(pt.PretrainConfig, ROOT / "configs/tiny/pretrain.yaml", MICRO + list(extra))
    return pt.main(cfg, str(world_dir / "corpus.jsonl"), str(world_dir / "corpus_heldout.jsonl"), str(out),
                   str(world_dir / "prompts_heldout.jsonl"))


def test_pretrain_learns_and_writes_the_artifact_contract(world_dir, tmp_path):
    out = tmp_path / "pretrain"
    metrics = run(world_dir, out, "train.precision=fp32-onednn")
    assert metrics["final_train_loss"] < metrics["first_loss"] - 0.5
    assert metrics["heldout"][-1]["heldout_loss"] < metrics["heldout"][0]["heldout_loss"]
    probe = metrics["task_probe"]
    assert probe["n"] == 8 and set(probe["correct_by_task"]) == {"story_qa", "arithmetic", "story_write", "greeting"}
    assert len(metrics["samples"]) == 2 and all(isinstance(s["completion"], str) for s in metrics["samples"])
    assert metrics["numerics"]["source"] == "forced"
    assert metrics["onednn_linear_layers"] == 7 + 1  # trained through oneDNN: q k v o gate up down, tied head
    # parameters moved away from the seeded initialisation
    tok = AutoTokenizer.from_pretrained(out / "model")
    init = pt.build_model(load_config(pt.PretrainConfig, None, MICRO).model, tok, seed=0).state_dict()
    trained = load_file(out / "model" / "model.safetensors")
    changed = [k for k, v in trained.items() if not torch.equal(v, init[k])]
    assert len(changed) == len(trained)
    # DONE is last, and nothing of the resume state is missing
    done = (out / "DONE").stat().st_mtime_ns
    for f in ["metrics.json", "config.yaml", "model/model.safetensors", "model/tokenizer.json"]:
        assert (out / f).stat().st_mtime_ns <= done, f
    assert list((out / "logs").glob("events.out.tfevents.*"))
    # stock transformers loads it and generates; the chat template ships with it
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert model.generation_config.eos_token_id == tok.eos_token_id != tok.pad_token_id
    # the project's loader reads the same checkpoint and says clearly when there is none
    assert count_params(load_causal_lm(out / "model")) == count_params(model)
    with pytest.raises(UserError, match="no model checkpoint here"):
        load_causal_lm(tmp_path)


def test_crash_then_rerun_resumes_and_matches_an_uninterrupted_run(world_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(world_dir, straight)

    crashed = tmp_path / "crashed"
    real_step, calls = pt.train_step, {"n": 0}

    def dying_step(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash at step 7")
        return real_step(*args)

    monkeypatch.setattr(pt, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run(world_dir, crashed)
    assert not (crashed / "DONE").exists()
    assert sorted(p.name for p in (crashed / "checkpoints").glob("*.pt")) == ["step_000004.pt"]

    monkeypatch.setattr(pt, "train_step", real_step)
    metrics = run(world_dir, crashed)
    assert metrics["resumed_from_step"] == 4 and (crashed / "DONE").exists()
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(crashed / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_stages_in_other_numerics_run_one_after_another_in_one_process(world_dir, tmp_path):
    """accelerate keeps one state per process; the auto pick differs by model shape and by machine (a CI run picked
    bf16 for the micro model after an fp32 run in the same process, and the second Accelerator refused)."""
    for i, precision in enumerate(("fp32", "bf16", "fp32")):
        m = run(world_dir, tmp_path / str(i), f"train.precision={precision}", "train.max_steps=2", "train.save_every=2",
                "train.eval_every=2")
        assert m["numerics"]["precision"] == precision


def test_the_same_compiled_run_gives_the_same_weights(world_dir, tmp_path):
    """Compiled CPU kernels add the embedding's gradient with atomics across threads; with
    train.deterministic (the default) two runs of one config still write byte-identical weights
    (with train.deterministic=false this test failed: the digests differed)."""
    extra = ["train.compile=true", "train.max_steps=6", "model.hidden_size=64", "model.intermediate_size=128"]
    digests = set()
    for name in ("a", "b"):
        run(world_dir, tmp_path / name, *extra)
        digests.add(hashlib.sha256((tmp_path / name / "model" / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_changed_config_does_not_resume_from_stale_checkpoints(world_dir, tmp_path, monkeypatch):
    out = tmp_path / "p"
    real_step, calls = pt.train_step, {"n": 0}

    def dying_step(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(pt, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run(world_dir, out)
    monkeypatch.setattr(pt, "train_step", real_step)
    metrics = run(world_dir, out, "model.hidden_size=48")
    assert metrics["resumed_from_step"] == 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pretrain.train", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("case", ["missing_corpus", "empty_corpus", "unknown_key", "wrong_type", "seq_too_long"])
def test_bad_input_is_one_clear_line_and_no_done(world_dir, tmp_path, case):
    corpus, heldout = str(world_dir / "corpus.jsonl"), str(world_dir / "corpus_heldout.jsonl")
    extra, expect = [], ""
    if case == "missing_corpus":
        corpus, expect = str(tmp_path / "nope.jsonl"), "nope.jsonl: file not found"
    elif case == "empty_corpus":
        corpus, expect = str(tmp_path / "empty.jsonl"), "corpus is empty"
        Path(corpus).write_text("\n")
    elif case == "unknown_key":
        extra, expect = ["train.learning_rate=0.1"], "train.learning_rate: unknown key"
    elif case == "wrong_type":
        extra, expect = ["train.batch_size=big"], "train.batch_size: must be int, got 'big'"
    else:
        extra, expect = ["train.seq_len=1024"], "larger than the model's context"
    out = tmp_path / "out"
    r = _cli("--config", "configs/tiny/pretrain.yaml", "--corpus", corpus, "--heldout", heldout, "--out", str(out), *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert not (out / "DONE").exists()
