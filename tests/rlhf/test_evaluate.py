"""The report card: its measures on hand-made data and a micro model, and a report from a partial chain."""

import math
import random
import shutil

import pytest
import torch

from core.annotator import compare_answers
from core.config import UserError, load_config
from rlhf import evaluate, report


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
    rep = report.Report("R")
    rep.h2("Section")
    rep.table(["model", "answer"], [["sft", "<script>x</script> | pipe"]])
    png = report.plot(tmp_path / "p.png", report.win_rate_figure([("dpo", 0.6, 0.5, 0.7)], 0.62, "t"))
    rep.image(png, "a plot")
    md, page = rep.markdown(tmp_path), rep.html()
    assert "## Section" in md and "\\| pipe" in md and "![a plot](p.png)" in md
    assert "&lt;script&gt;" in page and "<script>x" not in page and page.count("data:image/png;base64,") == 1


def test_report_from_a_partial_chain_says_what_is_missing(tmp_path, base_model_dir, world_dir, monkeypatch):
    runs = tmp_path / "runs"
    for stage in ("pretrain", "sft"):
        shutil.copytree(base_model_dir, runs / stage / "model")
        (runs / stage / "DONE").write_text("x\n")
    cfg = load_config(evaluate.EvalConfig, None, ["per_task=2", "max_new_tokens=6", "perplexity_docs=4", "bootstrap=50"])
    m = evaluate.main(cfg, str(runs), str(world_dir), str(tmp_path / "eval"))
    assert m["models"] == ["base", "sft"] and m["missing"] == ["dpo (make dpo)", "ppo (make ppo)", "rloo (make rloo)"]
    base = m["per_model"]["base"]["decodings"]["greedy, max_new_tokens=6"]["vs_sft"]
    assert (base["win_rate"], base["ties"]) == (0.5, 8)            # the same weights: the same answers
    page = (tmp_path / "eval" / "report.md").read_text()
    assert "Not built yet: dpo (make dpo), ppo (make ppo), rloo (make rloo)" in page
    assert "No reward model yet" in page and "No arena votes yet" in page
    assert (tmp_path / "eval" / "DONE").exists() and (tmp_path / "eval" / "plots" / "training_curves.png").exists()
    assert page.splitlines()[2] == "**Did alignment help? Not measured yet: no aligned model has finished (make dpo, make ppo).**"

    # `make report`: the same report again from metrics.json alone, with no model in reach
    import json
    monkeypatch.setattr("core.model.load_causal_lm", lambda *a, **k: pytest.fail("rendering must not load a model"))
    (tmp_path / "eval" / "report.md").unlink()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    report.render(saved, runs, tmp_path / "eval", None)
    assert (tmp_path / "eval" / "report.md").read_text() == page
    lines = report.summary(saved, runs, tmp_path / "eval")
    assert len(lines) <= 15 and lines[0].startswith("Did alignment help?")
    assert any("report.html" in x for x in lines) and any("make label" in x for x in lines)
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
    for name, d in m["per_model"]["dpo"]["decodings"].items():
        w, k = d["vs_sft"], 1 if name.startswith("greedy") else 4  # sampled: 4 answers per prompt by default
        assert w["n"] == 3 and w["answers_per_prompt"] == d["answers_per_prompt"] == k
        assert w["wins"] + w["ties"] + w["losses"] == 3 * k and 0 <= w["length_controlled_win_rate"] <= 1
        assert "correct" not in d and "vs_sft_by_task" not in d
    assert m["per_model"]["base"]["decodings"]["greedy, max_new_tokens=6"]["vs_sft"]["ties"] == 3  # same weights
    report = (tmp_path / "eval" / "report.md").read_text()
    assert f"Judge: reward model {rm}" in report and "length-controlled" in report and "Ceiling" not in report
    assert "sampled, 4 answers per prompt, each against SFT's answer of the same seed" in report


def _metrics(wins: dict, ceiling=0.9, losses=(30, 120)):
    """eval metrics.json as evaluate.main writes it, for the parts the verdict and the summary read."""
    names = ["temperature=0.7, max_new_tokens=64", "greedy, max_new_tokens=64"]
    per_model = {"sft": {"decodings": {n: {"losses_to_reference": {"losses_capability": losses[0],
                                                                    "losses_preference": losses[1]}} for n in names},
                         "heldout_perplexity": 1.8}}
    for m, (w, lo, hi) in wins.items():
        per_model[m] = {"decodings": {n: {"vs_sft": {"win_rate": w, "ci95": [lo, hi]}} for n in names},
                        "heldout_perplexity": 1.9}
    return {"prompts": 200, "models": list(per_model), "per_model": per_model,
            "ceiling": {n: ceiling for n in names} if ceiling else {},
            "decodings": [{"name": n, "temperature": t} for n, t in zip(names, (0.7, 0.0))]}


@pytest.mark.parametrize("wins, answer", [
    ({"dpo": (0.82, 0.777, 0.86), "ppo": (0.877, 0.843, 0.91)}, "Yes"),
    ({"dpo": (0.51, 0.49, 0.53)}, "No"),
    ({"dpo": (0.40, 0.35, 0.45), "ppo": (0.70, 0.65, 0.75)}, "Partly"),
])
def test_the_report_opens_with_one_sentence_that_answers_with_the_numbers(wins, answer):
    text = report.verdict(_metrics(wins))
    assert text.startswith(f"Did alignment help? {answer}: against SFT on 200 held-out prompts at temperature=0.7")
    best = max(wins, key=lambda m: wins[m][0])
    w, lo, hi = wins[best]
    assert f"{best.upper()} won {report.pct(w)} ({100 * lo:.1f}-{100 * hi:.1f})" in text
    assert "ceiling (the reference answers against SFT) is 90.0 %" in text
    assert "15.0 % of its answers for capability" in text and "60.0 % for preference" in text
    assert text.count(".") >= 1 and "\n" not in text


def test_the_make_all_summary_is_short_and_names_the_control_and_the_next_steps(tmp_path):
    import json
    runs = tmp_path / "runs"
    for stage, m in (("reward", {"test": {"accuracy": 0.783}, "pairs": {"test": 351}, "label_ceiling": 0.909,
                                 "annotator_agreement_on_test_pairs": 0.91, "wall_time_s": 67.0}),
                     ("dpo", {"implicit_reward_test": {"accuracy": 0.791}}),
                     ("pretrain", {"wall_time_s": 365.0}), ("control/0/dpo", {"vs_sft": {
                         "temperature=0.7, max_new_tokens=64": {"win_rate": 0.487},
                         "greedy, max_new_tokens=64": {"win_rate": 0.507}}})):
        (runs / stage).mkdir(parents=True)
        (runs / stage / "metrics.json").write_text(json.dumps(m))
    lines = report.summary(_metrics({"dpo": (0.82, 0.777, 0.86), "ppo": (0.877, 0.843, 0.91)}), runs, tmp_path / "eval")
    text = "\n".join(lines)
    assert len(lines) <= 15 and lines[0].startswith("Did alignment help? Yes")
    assert "DPO vs SFT" in text and "PPO vs SFT" in text and "ceiling" in text and "DPO 48.7 %" in text
    assert "78.3 % held-out pair accuracy on 351 pairs; label ceiling 90.9 %" in text
    assert "DPO's implicit reward 79.1 %" in text
    assert "pretrain 365 s" in text and "reward 67 s" in text and "7 min 12 s in all" in text
    assert str(tmp_path / "eval" / "report.html") in text and "make round AUTO=1" in text
    (runs / "control" / "1" / "dpo").mkdir(parents=True)     # a second shuffle: the range over both
    (runs / "control" / "1" / "dpo" / "metrics.json").write_text(json.dumps({"vs_sft": {
        "temperature=0.7, max_new_tokens=64": {"win_rate": 0.442}, "greedy, max_new_tokens=64": {"win_rate": 0.5}}}))
    text = "\n".join(report.summary(_metrics({"dpo": (0.82, 0.777, 0.86)}), runs, tmp_path / "eval"))
    assert "control: 2 label shuffles" in text and "DPO 44.2-48.7 %" in text and "DPO 50.0-50.7 %" in text
    assert "both ways" not in text
    (runs / "control" / "both" / "ppo").mkdir(parents=True)  # the run on every pair both ways: a line of its own
    (runs / "control" / "both" / "ppo" / "metrics.json").write_text(json.dumps({"vs_sft": {
        "temperature=0.7, max_new_tokens=64": {"win_rate": 0.473}, "greedy, max_new_tokens=64": {"win_rate": 0.497}}}))
    lines = report.summary(_metrics({"dpo": (0.82, 0.777, 0.86)}), runs, tmp_path / "eval")
    both = next(line for line in lines if "control: pairs both ways" in line)
    assert "PPO 47.3 %" in both and "PPO 49.7 %" in both and "DPO" not in both
    assert "DPO 44.2-48.7 %" in "\n".join(lines)               # the shuffles' range does not take it in


def test_the_report_lists_each_aligning_stages_kl_budget_what_it_measured_and_what_fired(tmp_path):
    import json
    from rlhf.report import kl_guards

    def stage(name, metrics, config=None):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        (tmp_path / name / "config.yaml").write_text(json.dumps({"config": config or {}}))
        (tmp_path / name / "DONE").write_text("")
    stage("dpo", {"guards": {"kl_budget": 12.0, "checks": [{"step": 72, "kl": 1.05}, {"step": 144, "kl": 1.98}],
                             "guard": None}})
    stage("ppo", {"history": [{"kl": 0.4}, {"kl": 13.1}], "guard": {"guard": "kl_budget", "step": 1}},
          {"guards": {"kl_budget": 12.0}})
    stage("rloo", {"guards": None})                           # a run with the guard off (guards.kl_budget=0)
    (tmp_path / "ppo-unfinished").mkdir()
    assert kl_guards(tmp_path) == [["dpo", 12.0, "1.98", "no"], ["ppo", 12.0, "13.10", "kl_budget at step 1"],
                                   ["rloo", "none", "", "no"]]


def test_the_report_puts_each_control_run_under_the_real_labels(tmp_path):
    import json
    runs = tmp_path / "runs"

    def stage(path, metrics):
        (runs / path).mkdir(parents=True)
        (runs / path / "metrics.json").write_text(json.dumps(metrics))

    def policy(win, correct):
        return {"vs_sft": {"greedy": {"win_rate": win, "ci95": [win - 0.02, win + 0.02], "correct_a": correct}}}
    assert report.control_table(runs, ["greedy"]) is None       # nothing to show before make bench-control
    stage("reward", {"test": {"accuracy": 0.8}})
    stage("dpo", policy(0.86, 0.82))
    stage("ppo", policy(0.9, 0.83))
    stage("control/1/reward", {"test": {"accuracy": 0.45}})
    stage("control/1/ppo", policy(0.46, 0.76))                  # DPO of this shuffle not run: an empty cell
    stage("control/both/dpo", policy(0.5, 0.8))
    head, rows = report.control_table(runs, ["greedy"])
    assert head == ["labels", "reward model, held-out pairs", "DPO vs SFT, greedy", "PPO vs SFT, greedy"]
    assert rows == [["real labels", "80.0 %", "86.0 % (84.0-88.0), correct 82.0 %", "90.0 % (88.0-92.0), correct 83.0 %"],
                    ["shuffled, shuffle 1", "45.0 %", "", "46.0 % (44.0-48.0), correct 76.0 %"],
                    ["every pair both ways", "", "50.0 % (48.0-52.0), correct 80.0 %", ""]]
