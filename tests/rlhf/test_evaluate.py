"""The report card: its measures on hand-made data and a micro model, and a report from a partial chain."""

import math
import random
import shutil

import pytest
import torch

from core.annotator import compare_answers
from core.config import UserError, load_config
from rlhf import evaluate


def test_distinct_n_on_hand_made_answers():
    answers = ["a b a b", "A b c"]
    assert evaluate.distinct_n(answers, 1) == round(3 / 7, 3)      # a b a b a b c: 3 different of 7
    assert evaluate.distinct_n(answers, 2) == round(3 / 5, 3)      # ab ba ab | ab bc
    assert evaluate.distinct_n(["one"], 2) == 0.0


def test_win_rate_and_its_bootstrap_interval_match_the_normal_approximation():
    prompts = [{"task": "arithmetic", "expected": 5, "id": str(i)} for i in range(400)]
    rng = random.Random(0)
    wins = [rng.random() < 0.6 for _ in prompts]
    a = ["2 plus 3 is 5." if w else "2 plus 3 is 6." for w in wins]
    b = ["2 plus 3 is 6." if w else "2 plus 3 is 5." for w in wins]
    r = compare_answers(prompts, a, b, n_boot=4000)
    p = sum(wins) / len(wins)
    half = 1.96 * math.sqrt(p * (1 - p) / len(wins))
    assert r["win_rate"] == round(p, 3) and r["ties"] == 0
    assert r["ci95"][0] == pytest.approx(p - half, abs=0.01) and r["ci95"][1] == pytest.approx(p + half, abs=0.01)


def test_corpus_perplexity_is_the_exponent_of_the_models_own_loss(base_model_dir):
    from core.model import load_causal_lm
    from core.tokenizer import load_tokenizer
    model, tok = load_causal_lm(base_model_dir).eval(), load_tokenizer(base_model_dir)
    text = "Tom went to the park. Tom saw a dog."
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert evaluate.corpus_perplexity(model, tok, [text], 128) == pytest.approx(math.exp(float(loss)), rel=1e-3)


def test_report_renders_markdown_and_self_contained_html(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    rep = evaluate.Report("R")
    rep.h2("Section")
    rep.table(["model", "answer"], [["sft", "<script>x</script> | pipe"]])
    png = evaluate.plot(tmp_path / "p.png", evaluate.win_rate_figure([("dpo", 0.6, 0.5, 0.7)], 0.62, "t"))
    rep.image(png, "a plot")
    md, page = rep.markdown(tmp_path), rep.html()
    assert "## Section" in md and "\\| pipe" in md and "![a plot](p.png)" in md
    assert "&lt;script&gt;" in page and "<script>x" not in page and page.count("data:image/png;base64,") == 1


def test_report_from_a_partial_chain_says_what_is_missing(tmp_path, base_model_dir, world_dir):
    runs = tmp_path / "runs"
    for stage in ("pretrain", "sft"):
        shutil.copytree(base_model_dir, runs / stage / "model")
        (runs / stage / "DONE").write_text("x\n")
    cfg = load_config(evaluate.EvalConfig, None, ["per_task=2", "max_new_tokens=6", "perplexity_docs=4", "bootstrap=50"])
    m = evaluate.main(cfg, str(runs), str(world_dir), str(tmp_path / "eval"))
    assert m["models"] == ["base", "sft"] and m["missing"] == ["dpo (make dpo)", "ppo (make ppo)", "rloo (make rloo)"]
    base = m["per_model"]["base"]["decodings"]["greedy, max_new_tokens=6"]["vs_sft"]
    assert (base["win_rate"], base["ties"]) == (0.5, 8)            # the same weights: the same answers
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Not built yet: dpo (make dpo), ppo (make ppo), rloo (make rloo)" in report
    assert "No reward model yet" in report and "No arena votes yet" in report
    assert (tmp_path / "eval" / "DONE").exists() and (tmp_path / "eval" / "plots" / "training_curves.png").exists()
    shutil.rmtree(runs / "sft")
    with pytest.raises(UserError, match="no finished SFT model"):
        evaluate.main(cfg, str(runs), str(world_dir), str(tmp_path / "eval2"))


def test_report_on_outside_prompts_with_a_reward_model_judge(tmp_path, base_model_dir, other_model_dir, world_dir):
    """A team's own prompt set (no world task fields) judged by a reward model: win rate and length-controlled
    win rate, no world-only columns; the scripted judge refuses such prompts before any work."""
    import json

    from transformers import LlamaConfig, LlamaForSequenceClassification

    from core.tokenizer import load_tokenizer
    runs = tmp_path / "runs"
    for stage, src in (("pretrain", base_model_dir), ("sft", base_model_dir), ("dpo", other_model_dir)):
        shutil.copytree(src, runs / stage / "model")
        (runs / stage / "DONE").write_text("x\n")
    tok = load_tokenizer(base_model_dir)
    rm = tmp_path / "judge"
    LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id, max_position_embeddings=128)).save_pretrained(rm)
    tok.save_pretrained(rm)
    own = tmp_path / "own.jsonl"
    own.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in ["Say hi.", "Name a dog.", "Count to 3."]))
    over = ["per_task=3", "max_new_tokens=6", "perplexity_docs=4", "bootstrap=50", "prompt_source.prompt=instruction",
            "prompt_source.id="]
    with pytest.raises(UserError, match="is not a world prompt"):
        evaluate.main(load_config(evaluate.EvalConfig, None, over), str(runs), str(world_dir), str(tmp_path / "e0"),
                      prompts=str(own))
    assert not (tmp_path / "e0").exists()
    cfg = load_config(evaluate.EvalConfig, None, over + ["judge.kind=reward_model", f"judge.path={rm}"])
    m = evaluate.main(cfg, str(runs), str(world_dir), str(tmp_path / "eval"), prompts=str(own))
    assert m["prompts"] == 3 and m["ceiling"] == {} and m["judge"]["kind"] == "reward_model"
    for d in m["per_model"]["dpo"]["decodings"].values():
        w = d["vs_sft"]
        assert w["n"] == 3 and w["wins"] + w["ties"] + w["losses"] == 3 and 0 <= w["length_controlled_win_rate"] <= 1
        assert "correct" not in d and "vs_sft_by_task" not in d
    assert m["per_model"]["base"]["decodings"]["greedy, max_new_tokens=6"]["vs_sft"]["ties"] == 3  # same weights
    report = (tmp_path / "eval" / "report.md").read_text()
    assert f"Judge: reward model {rm}" in report and "length-controlled" in report and "Ceiling" not in report
