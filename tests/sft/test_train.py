"""SFT smoke tests on a micro model: what changed, what the loss sees, LoRA merge, resume, bad rows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import sft.train as st
from core.config import UserError, load_config

ROOT = Path(__file__).resolve().parents[2]
MICRO = ["train.batch_size=8", "train.max_steps=6", "train.lr=0.01", "train.save_every=2", "train.log_every=1",
         "train.max_length=128", "data.heldout_loss_rows=16", "eval.per_task=2", "eval.max_new_tokens=8",
         "eval.sample_chats=1", "data.pretrain_mix=0"]


def config(*extra):
    return load_config(st.SFTStageConfig, ROOT / "configs/tiny/sft.yaml", MICRO + list(extra))


def run(world_dir, base_model_dir, out, *extra, data=None, corrections=None, corpus=None):
    return st.main(config(*extra), str(base_model_dir), data or str(world_dir / "sft.jsonl"),
                   str(world_dir / "prompts_heldout.jsonl"), str(out), corrections, corpus)


def test_sft_trains_and_writes_the_artifact_contract(world_dir, base_model_dir, tmp_path):
    out = tmp_path / "sft"
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 2 plus 2?"},
                                                    {"role": "assistant", "content": "2 plus 2 is 4."}]}) + "\n")
    metrics = run(world_dir, base_model_dir, out, corrections=str(corrections))
    assert metrics["steps"] == 6 and metrics["rows"]["corrections"] == 1
    assert metrics["heldout_loss_after"] < metrics["heldout_loss_before"]
    for who in ("base", "sft"):
        ev = metrics["task_eval"][who]
        assert ev["n"] == 8 and set(ev["correct_by_task"]) == {"story_qa", "arithmetic", "story_write", "greeting"}
    assert metrics["train_tokens_per_s"] > 0 and len(metrics["samples"]) == 2
    base, tuned = load_file(base_model_dir / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert all(not torch.equal(base[k], tuned[k]) for k in base)
    done = (out / "DONE").stat().st_mtime_ns
    for f in ["metrics.json", "config.yaml", "model/model.safetensors", "model/tokenizer.json"]:
        assert (out / f).stat().st_mtime_ns <= done, f
    assert list((out / "logs").glob("events.out.tfevents.*"))
    recorded = (out / "config.yaml").read_text()
    assert "corrections.jsonl" in recorded and "sha256" in recorded


def test_loss_sees_only_assistant_replies_each_ending_in_one_eos(world_dir, base_model_dir, tokenizer, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi, I am Tom."}, {"role": "assistant", "content": "Hello Tom!"},
                          {"role": "user", "content": "What is 1 plus 1?"},
                          {"role": "assistant", "content": "1 plus 1 is 2."}]},
            {"messages": [{"role": "user", "content": "Tell me a story about Amy."},
                          {"role": "assistant", "content": "One day Amy went to the park. The end."}]}]
    policy = AutoModelForCausalLM.from_pretrained(base_model_dir)
    trainer = st.build_trainer(config("train.group_by_length=false"), policy, tokenizer, rows, rows, tmp_path)
    batch = next(iter(trainer.get_eval_dataloader()))
    seen = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        # labels are shifted inside the model; here label[i] == input[i] where trained, -100 elsewhere
        trained = [t for t, lab in zip(ids, labels) if lab != -100]
        assert all(lab in (-100, t) for t, lab in zip(ids, labels))
        seen.append(tokenizer.decode(trained))
    assert seen == [" Hello Tom!<|eos|> 1 plus 1 is 2.<|eos|>", " One day Amy went to the park. The end.<|eos|>"]


def test_pretraining_text_mixed_in_is_trained_on_every_token(world_dir, base_model_dir, tokenizer, tmp_path):
    chats = [{"messages": [{"role": "user", "content": "What is 1 plus 1?"},
                           {"role": "assistant", "content": "1 plus 1 is 2."}]}]
    rows = st.mixed_rows(tokenizer, chats, ["Tom went to the park."], 128)
    policy = AutoModelForCausalLM.from_pretrained(base_model_dir)
    trainer = st.build_trainer(config("train.group_by_length=false"), policy, tokenizer, rows, chats, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    seen = sorted(tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
                  for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()))
    assert seen == [" 1 plus 1 is 2.<|eos|>", "<|bos|>Tom went to the park.<|eos|>"]
    # the stage: documents per demonstration, recorded; without --corpus a clear error
    m = run(world_dir, base_model_dir, tmp_path / "sft", "data.pretrain_mix=0.5", corpus=str(world_dir / "corpus.jsonl"))
    assert m["rows"]["pretraining_documents"] == round(0.5 * m["rows"]["demonstrations"])
    with pytest.raises(UserError, match="needs --corpus"):
        run(world_dir, base_model_dir, tmp_path / "sft2", "data.pretrain_mix=0.5")


def test_lora_run_saves_a_merged_plain_model_equal_to_the_adapter(world_dir, base_model_dir, tmp_path):
    out = tmp_path / "lora"
    # bf16 forced: the merge check must compare both sides in fp32, whichever numerics trained (a CI run whose
    # probe picked bf16 for this micro model compared the trainer's autocast forward with the merged fp32 one)
    metrics = run(world_dir, base_model_dir, out, "lora.enabled=true", "lora.r=4", "train.lr=0.05", "train.precision=bf16")
    assert metrics["lora"] and metrics["trainable_params"] < metrics["params"] / 4
    assert metrics["lora_merge_max_abs_logit_diff"] < 1e-4
    tensors = load_file(out / "model" / "model.safetensors")
    assert not any("lora" in k for k in tensors)
    base = load_file(base_model_dir / "model.safetensors")
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], tensors["model.layers.0.self_attn.q_proj.weight"])


def test_merge_lora_matches_adapter_outputs(base_model_dir, tokenizer):
    from peft import get_peft_model
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    peft_model = get_peft_model(model, st.lora_config(config("lora.enabled=true", "lora.r=4").lora,
                                                      model.config.num_hidden_layers))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero; give the adapter a real effect
                p.normal_(0, 0.5)
    merged, diff = st.merge_lora(peft_model, tokenizer)
    assert diff < 1e-4 and type(merged).__name__ == "LlamaForCausalLM"
    plain = AutoModelForCausalLM.from_pretrained(base_model_dir)
    x = torch.tensor([[tokenizer.bos_token_id, 10, 11, 12]])
    assert (merged(x).logits - plain(x).logits).abs().max() > 1e-3


def test_lora_layers_adapt_only_the_named_decoder_layers(base_model_dir):
    from peft import get_peft_model
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    last = model.config.num_hidden_layers - 1
    lora = config("lora.enabled=true", f"lora.layers=[{last}]", "lora.target_modules=[gate_proj,down_proj]").lora
    adapted = {k.split(".lora_A")[0] for k, _ in get_peft_model(model, st.lora_config(lora, last + 1)).named_parameters()
               if "lora_A" in k}
    assert {a.split("model.")[-1] for a in adapted} == {f"layers.{last}.mlp.gate_proj", f"layers.{last}.mlp.down_proj"}
    with pytest.raises(UserError, match=f"has {last + 1} decoder layers"):
        st.lora_config(config("lora.enabled=true", f"lora.layers=[{last + 1}]").lora, last + 1)
    with pytest.raises(UserError, match="distinct layer indices"):
        config("lora.layers=[0,0]")


def test_crash_then_rerun_resumes_from_the_last_checkpoint(world_dir, base_model_dir, tmp_path, monkeypatch):
    from trl import SFTTrainer
    real_step = SFTTrainer.training_step
    calls = {"n": 0}

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_step(self, *a, **k)

    out = tmp_path / "sft"
    monkeypatch.setattr(SFTTrainer, "training_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(world_dir, base_model_dir, out)
    assert not (out / "DONE").exists() and (out / "checkpoints" / "checkpoint-4").is_dir()
    monkeypatch.setattr(SFTTrainer, "training_step", real_step)
    resumed = run(world_dir, base_model_dir, out)
    assert resumed["resumed_from"].endswith("checkpoint-4") and resumed["steps"] == 6 and (out / "DONE").exists()
    fresh = run(world_dir, base_model_dir, tmp_path / "fresh")
    a, b = load_file(out / "model" / "model.safetensors"), load_file(tmp_path / "fresh" / "model" / "model.safetensors")
    assert fresh["resumed_from"] is None
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_stock_transformers_loads_the_sft_model_and_it_ends_its_reply(world_dir, base_model_dir, tmp_path):
    out = tmp_path / "sft"
    # bare answers (no closing sentence): what a 1-layer micro model learns to end within a minute
    rows = [{"messages": p["messages"] + [{"role": "assistant", "content": p["answer"]}]}
            for p in map(json.loads, (world_dir / "prompts_train.jsonl").read_text().splitlines())]
    data = tmp_path / "bare.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(world_dir, base_model_dir, out, "train.max_steps=60", "train.lr=0.01", "train.save_every=100", data=str(data))
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=40, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    assert tok.eos_token_id in gen, tok.decode(gen)
    assert tok.decode(gen[: gen.index(tok.eos_token_id)]).strip()


BAD_ROWS = {
    "no_messages": ({"prompt": "hi", "completion": "hello"}, "row 2: no 'messages' list"),
    "role_order": ({"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}]},
                   "row 2: wrong role order ['assistant', 'user']"),
    "empty_reply": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
                    "row 2: message 1 (assistant) is empty"),
    "too_long": ({"messages": [{"role": "user", "content": "Tom went to the park. " * 40},
                               {"role": "assistant", "content": "Tom went to the park."}]},
                 "longer than the context (max_length=128)"),
}


def _data_with(tmp_path, world_dir, bad: dict) -> Path:
    good = json.loads((world_dir / "sft.jsonl").read_text().splitlines()[0])
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [good, bad, good]) + "\n")
    return data


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_name_the_row_or_are_skipped_and_counted(world_dir, base_model_dir, tmp_path, case):
    bad, expect = BAD_ROWS[case]
    data = _data_with(tmp_path, world_dir, bad)
    with pytest.raises(UserError) as err:
        run(world_dir, base_model_dir, tmp_path / "out", data=str(data))
    assert expect in str(err.value) and "skip_bad_rows=true" in str(err.value) and str(data) in str(err.value)
    assert not (tmp_path / "out" / "DONE").exists()
    from core.data import check_chat_rows, load_rows
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    kept, skipped = check_chat_rows(load_rows(data), str(data), tok, 128, skip_bad=True)
    assert len(kept) == 2 and skipped == {case.replace("_", " ").replace("reply", "turn"): 1}


def test_bad_row_from_the_command_line_is_one_line_and_exit_2(world_dir, base_model_dir, tmp_path):
    data = _data_with(tmp_path, world_dir, BAD_ROWS["role_order"][0])
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sft.train", "--config", "configs/tiny/sft.yaml",
                        "--model", str(base_model_dir), "--data", str(data),
                        "--heldout-prompts", str(world_dir / "prompts_heldout.jsonl"), "--out", str(out),
                        *MICRO], capture_output=True, text=True, cwd=ROOT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {data}: row 2: wrong role order") and not (out / "DONE").exists()


def test_all_rows_bad_is_an_error_even_when_skipping(base_model_dir, tmp_path):
    from core.data import check_chat_rows
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    with pytest.raises(UserError, match="no valid chat rows"):
        check_chat_rows([{"text": "x"}], "d.jsonl", tok, 128, skip_bad=True)


def test_context_longer_than_the_model_is_refused_before_anything_is_written(world_dir, base_model_dir, tmp_path):
    with pytest.raises(UserError, match="train.max_length=512 is longer than the model's context"):
        run(world_dir, base_model_dir, tmp_path / "out", "train.max_length=512")
    assert not (tmp_path / "out").exists()
