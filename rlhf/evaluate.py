"""Evaluate: did alignment help, by how much, at what cost? One report card for every finished model.

Run:    make eval
        python -m rlhf.evaluate --config configs/tiny/eval.yaml --runs runs/tiny --world runs/tiny/world \
            --votes runs/tiny/arena/votes.jsonl --out runs/tiny/eval
Reads:  <runs>/{pretrain,sft,dpo,ppo,rloo}/ (whichever finished: model/, metrics.json, config.yaml, logs/),
        <runs>/reward/ and <runs>/prefs/ (reward model, its accuracy, the labels it was trained on),
        the world's held-out prompts and held-out corpus, and the arena votes (exported from the label store)
Writes: <out>/report.md, report.html (plots embedded), plots/*.png, metrics.json, config.yaml, DONE (last)

Every model answers the same held-out prompts (the world's, or --prompts mapped by prompt_source) at
each decoding of `temperatures`, with the same seeds. Against the SFT policy's answers the judge
(core.judges: scripted, reward_model or llm) gives a win rate (ties count half, 95 % bootstrap CI)
and a length-controlled one; on world prompts also per task, next to the ceiling a perfect policy
would reach (the world's reference answers against SFT), and the judge's agreement with the
held-out labels. Per model also: correctness, mean reward-model score, KL
to SFT, held-out corpus perplexity (does alignment cost language modelling?), answer length,
distinct-n, EOS rate. The training-side figures (curves, wall times, hashes) are read from what
the stages wrote; nothing is retrained. Arena votes become Bradley-Terry ratings.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from core.annotator import ScriptedAnnotator, compare_answers, distinct_rate, first_per_task, losses_to_reference
from core.artifacts import StageDir, write_json
from core.compare import kl_to_reference
from core.config import UserError, cli
from core.data import PromptSource, fit_prompts, load_preferences, load_prompts, load_rows
from core.generation import Decoding, chat, completion_logprobs
from core.judges import JudgeSettings, agreement, is_world_prompt, make_judge, pairwise, win_rate
from core.model import context_length, load_causal_lm, to_inference_device
from core.ratings import ratings
from core.tokenizer import load_tokenizer

MODELS = (("base", "pretrain"), ("sft", "sft"), ("dpo", "dpo"), ("ppo", "ppo"), ("rloo", "rloo"))
CURVES = {"pretrain": ("train/loss", "heldout/loss"), "sft": ("train/loss", "eval/loss"),
          "reward": ("train/loss", "train/accuracy"), "dpo": ("train/loss", "train/rewards/accuracies"),
          "ppo": ("ppo/score", "ppo/kl"), "rloo": ("train/loss", "train/reward")}


@dataclass
class EvalConfig:
    seed: int = 0
    per_task: int = 50                 # held-out prompts per task (4 tasks: 200)
    skip_per_task: int = 0             # > 0: the next prompts of each task instead (a sample no setting was chosen on)
    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.0])   # 0 = greedy
    max_new_tokens: int = 64
    perplexity_docs: int = 200         # held-out corpus documents for perplexity
    samples: int = 6                   # prompts in the side-by-side table
    bootstrap: int = 2000
    judge: JudgeSettings = field(default_factory=JudgeSettings)       # who compares each answer with SFT's
    prompt_source: PromptSource = field(default_factory=PromptSource)  # which columns of --prompts hold what

    def validate(self) -> None:
        if self.per_task < 1 or not self.temperatures or self.samples < 0 or self.perplexity_docs < 1:
            raise UserError("eval: need per_task >= 1, at least one temperature, samples >= 0, perplexity_docs >= 1")


# ---------------------------------------------------------------- measures (pure or model-in, numbers-out)

def distinct_n(answers: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams in all answers (1.0 = never repeats itself or another answer)."""
    grams = [tuple(w[i:i + n]) for w in (a.lower().split() for a in answers) for i in range(len(w) - n + 1)]
    return round(len(set(grams)) / len(grams), 3) if grams else 0.0


@torch.no_grad()
def corpus_perplexity(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 16) -> float:
    """exp(mean -log p) over every token of the texts, each read from BOS (no chat template)."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_len - 1] for t in texts]
    logps = completion_logprobs(model, [[tokenizer.bos_token_id]] * len(ids), ids, tokenizer.pad_token_id, batch_size)
    flat = [x for row in logps for x in row]
    return round(math.exp(-sum(flat) / len(flat)), 4)


def scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    if not logdir.is_dir():
        return []
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def stage_provenance(stage_dir: Path) -> dict:
    """Wall time, throughput, git commit, config hash and the hashes of its inputs (labels, model)."""
    m = json.loads((stage_dir / "metrics.json").read_text()) if (stage_dir / "metrics.json").exists() else {}
    rec = yaml.safe_load((stage_dir / "config.yaml").read_text()) if (stage_dir / "config.yaml").exists() else {}
    inputs = (rec or {}).get("inputs") or {}
    m = {**(m.get("last_logged") or {}), **m}   # TRL stages log their samples/s there
    throughput = next((f"{m[k]:,} {unit}" for k, unit in (("train_tokens_per_s", "tokens/s"),
                                                          ("samples_per_s", "samples/s"),
                                                          ("train_samples_per_s", "pairs/s"),
                                                          ("train_samples_per_second", "samples/s"),
                                                          ("generated_tokens_per_s", "generated tokens/s")) if m.get(k)), "")
    return {"wall_time_s": m.get("wall_time_s"), "throughput": throughput, "git_commit": (rec or {}).get("git_commit"),
            "config_sha256": hashlib.sha256(json.dumps((rec or {}).get("config"), sort_keys=True).encode()).hexdigest()
            if rec else None, "labels_sha256": (inputs.get("train") or {}).get("sha256")}


# ---------------------------------------------------------------- the report document (Markdown and HTML from one list)

class Report:
    def __init__(self, title: str):
        self.title, self.blocks = title, []

    def h2(self, text: str):
        self.blocks.append(("h2", text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, [["" if c is None else str(c) for c in r] for r in rows]))

    def image(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def markdown(self, base: Path) -> str:
        out = [f"# {self.title}\n"]
        for b in self.blocks:
            if b[0] == "h2":
                out.append(f"\n## {b[1]}\n")
            elif b[0] == "p":
                out.append(b[1] + "\n")
            elif b[0] == "table":
                cell = lambda c: c.replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in b[2]] + [""]
            else:
                out.append(f"![{b[2]}]({b[1].relative_to(base)})\n")
        return "\n".join(out)

    def html(self) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
               "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:left;vertical-align:top}img{max-width:100%}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h2":
                out.append(f"<h2>{html.escape(b[1])}</h2>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1]).replace('**', '')}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1]) + "</tr>" + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2]) + "</table>")
            else:
                data = base64.b64encode(b[1].read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                           f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        return "\n".join(out + ["</body></html>"])


# ---------------------------------------------------------------- plots

def plot(path: Path, draw) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = draw(plt)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def curves_figure(runs: Path):
    def draw(plt):
        stages = [s for s in CURVES if (runs / s / "logs").is_dir()]
        fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(3.2 * max(1, len(stages)), 2.8), squeeze=False)
        for ax, s in zip(axes[0], stages):
            for tag in CURVES[s]:
                pts = scalars(runs / s / "logs", tag)
                if pts:
                    ax.plot(*zip(*pts), label=tag, lw=1)
            ax.set_title(s)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        return fig
    return draw


def win_rate_figure(rows: list[tuple[str, float, float, float]], ceiling: float | None, title: str):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 2.8))
        names = [r[0] for r in rows]
        ax.bar(names, [r[1] for r in rows], color="#ea580c",
               yerr=[[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]], capsize=4)
        ax.axhline(0.5, color="grey", lw=1, ls="--", label="= SFT")
        if ceiling is not None:
            ax.axhline(ceiling, color="green", lw=1, ls=":", label="ceiling (reference answers)")
        ax.set_ylim(0, 1)
        ax.set_ylabel("win rate vs SFT")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        return fig
    return draw


def ppo_figure(history: list[dict]):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(4.5, 3))
        sc = ax.scatter([h["kl"] for h in history], [h["score"] for h in history], c=[h["step"] for h in history],
                        cmap="viridis", s=14)
        fig.colorbar(sc, ax=ax, label="step")
        ax.set_xlabel("KL to SFT (nats per answer)")
        ax.set_ylabel("reward-model score")
        ax.set_title("PPO: reward vs KL over training", fontsize=9)
        return fig
    return draw


def lengths_figure(lengths: dict[str, list[int]], title: str):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 2.8))
        top = max((max(v) for v in lengths.values() if v), default=1)
        for name, v in lengths.items():
            ax.hist(v, bins=range(0, top + 2, max(1, top // 30)), histtype="step", label=name)
        ax.set_xlabel("answer length (tokens)")
        ax.set_ylabel("answers")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        return fig
    return draw


# ---------------------------------------------------------------- the stage

def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def _loss_split(losses: dict | None, n: int) -> str:
    if not losses:
        return ""
    return f"{pct(losses['losses_capability'] / n)} / {pct(losses['losses_preference'] / n)}"


def _with_ci(r: dict) -> str:
    return f"{100 * r['win_rate']:.0f} % ({100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f})"


def main(cfg: EvalConfig, runs: str, world: str, out: str, votes: str | None = None, prompts: str | None = None) -> dict:
    runs_dir, world_dir = Path(runs), Path(world)
    prompt_file = prompts or world_dir / "prompts_heldout.jsonl"
    present = {name: runs_dir / stage for name, stage in MODELS if (runs_dir / stage / "DONE").exists()}
    missing = [f"{name} (make {stage})" for name, stage in MODELS if name not in present]
    if "sft" not in present:
        raise UserError(f"{runs_dir}/sft: no finished SFT model; the report compares every model with it (make sft)")
    prompts = first_per_task(load_prompts(prompt_file, cfg.prompt_source, "prompt_source"), cfg.per_task,
                             cfg.skip_per_task)
    world_prompts = all(is_world_prompt(p) for p in prompts)  # correctness and the ceiling need the world's rubric
    judge = make_judge(cfg.judge, prompts)
    tok = load_tokenizer(present["sft"] / "model")
    prompts = fit_prompts(prompts, tok, context_length(present["sft"] / "model"), cfg.max_new_tokens,
                          cfg.prompt_source, prompt_file, "prompt_source")
    docs = [r["text"] for r in load_rows(world_dir / "corpus_heldout.jsonl")[: cfg.perplexity_docs]]
    stage = StageDir(out)
    stage.start(cfg, inputs={"prompts": prompt_file}, stage_file=__file__)
    plots = stage.root / "plots"
    plots.mkdir(exist_ok=True)
    torch.set_num_threads(os.cpu_count())

    decodings = [Decoding(t, max_new_tokens=cfg.max_new_tokens) for t in cfg.temperatures]
    convs = [p["messages"] for p in prompts]

    def load(name: str):
        return to_inference_device(load_causal_lm(present[name] / "model").eval())

    def answer(m) -> dict:
        return {str(d): chat(m, tok, convs, d, seed=cfg.seed) for d in decodings}

    sft = load("sft")  # every model is compared with it; the others are loaded one at a time (memory at gpu scale)
    answers = {"sft": answer(sft)}

    rm = rm_tok = None
    if (runs_dir / "reward" / "DONE").exists():
        from core.reward import load_reward_model, reward_scores
        rm, rm_tok = load_reward_model(runs_dir / "reward" / "model", tok, present["sft"] / "model")

    scripted, first = ScriptedAnnotator(), str(decodings[0])
    per_model, tasks = {}, sorted({p["task"] for p in prompts}) if world_prompts else []
    for name in present:
        m = sft if name == "sft" else load(name)
        if name not in answers:
            answers[name] = answer(m)
        r = {"decodings": {}}
        for d in decodings:
            comps, ref = answers[name][str(d)], answers["sft"][str(d)]
            texts = [c.text for c in comps]
            entry = {"mean_tokens": round(sum(len(c.token_ids) for c in comps) / len(comps), 1),
                     "eos_rate": round(sum(c.finished for c in comps) / len(comps), 3),
                     "distinct_answers": distinct_rate(texts), "distinct_1": distinct_n(texts, 1),
                     "distinct_2": distinct_n(texts, 2)}
            if world_prompts:
                entry["correct"] = round(sum(scripted.is_correct(p, t) for p, t in zip(prompts, texts)) / len(prompts), 3)
                entry["correct_by_task"] = {t: round(sum(scripted.is_correct(p, x) for p, x in zip(prompts, texts)
                                                         if p["task"] == t) / sum(p["task"] == t for p in prompts), 3)
                                            for t in tasks}
                # Where the model loses to the best answer: the task failed (capability) or done worse (preference).
                entry["losses_to_reference"] = losses_to_reference(prompts, texts, scripted)
            if name != "sft":
                entry["vs_sft"] = pairwise(judge.compare(prompts, texts, [c.text for c in ref]),
                                           [len(c.token_ids) for c in comps], [len(c.token_ids) for c in ref],
                                           cfg.bootstrap, cfg.seed)
                if cfg.judge.kind == "scripted":
                    entry["vs_sft_by_task"] = {t: compare_answers(*zip(*[(p, x, y.text) for p, x, y in zip(prompts, texts, ref)
                                                                         if p["task"] == t]), scripted, cfg.bootstrap, cfg.seed)
                                               for t in tasks}
            r["decodings"][str(d)] = entry
        if rm is not None:
            scores = reward_scores(rm, rm_tok, [c + [{"role": "assistant", "content": a.text}]
                                               for c, a in zip(convs, answers[name][first])])
            r["reward_score"] = round(sum(scores) / len(scores), 3)
        r["kl_to_sft"] = kl_to_reference(m, sft, tok, prompts, cfg.max_new_tokens, cfg.seed)
        r["heldout_perplexity"] = corpus_perplexity(m, tok, docs, m.config.max_position_embeddings)
        per_model[name] = r
        del m  # before the next one is loaded
    del sft
    models = list(present)
    ceiling = {str(d): win_rate(judge.compare(prompts, [p["reference"] for p in prompts],
                                              [c.text for c in answers["sft"][str(d)]]), cfg.bootstrap)["win_rate"]
               for d in decodings} if world_prompts else {}
    held_out_pairs = runs_dir / "prefs" / "test.jsonl"
    judge_agreement = agreement(judge, {p["id"]: p for p in load_rows(world_dir / "prompts_train.jsonl")},
                                load_preferences(held_out_pairs)) if world_prompts and held_out_pairs.exists() else None

    metrics = {"prompts": len(prompts), "models": list(models), "missing": missing, "per_model": per_model,
               "ceiling": ceiling, "judge": {"kind": cfg.judge.kind, "name": judge.name,
                                             "parse_failures": judge.parse_failures,
                                             "agreement_with_held_out_labels": judge_agreement}}
    rep = Report(f"Alignment report: {runs_dir}")
    rep.p(f"Models: {', '.join(models)}" + (f". Not built yet: {', '.join(missing)}." if missing else "."))
    rep.p(f"{len(prompts)} held-out prompts" + (f" ({cfg.per_task} per task: {', '.join(tasks)})" if tasks else
                                                 f" from {prompt_file}") +
          f", the same seeds for every model. Judge: {judge.name}" +
          (f", which agrees with {pct(judge_agreement['accuracy'])} of {judge_agreement['pairs']} held-out labelled "
           "pairs" if judge_agreement else "") +
          (f"; {judge.parse_failures} of its verdicts named neither answer (counted as ties)" if cfg.judge.kind == "llm"
           else "") +
          ". Win rate = the judge prefers the model's answer to SFT's on the same prompt (ties count half), with a "
          "95 % bootstrap CI; length-controlled = the same with the answers' length difference regressed out "
          "(AlpacaEval 2 style), so a judge that merely likes longer answers shows.")
    if world_prompts:
        rep.p("Ceiling = the world's reference answers against the same SFT answers: ties count half, so no policy can "
              "beat it. Losses to the reference split by cause: capability = the task failed (wrong answer, missing "
              "item); preference = the task done but worse by the rubric's style (chatter, no kind closing, rambling, "
              "rudeness): what preference learning can fix.")

    # -- headline
    rep.h2("Did alignment help?")
    for d in decodings:
        key = str(d)
        rows, bars = [], []
        for name in models:
            e = per_model[name]["decodings"][key]
            w = e.get("vs_sft")
            rows.append([name, "reference" if w is None else f"{pct(w['win_rate'])} ({pct(w['ci95'][0])}-{pct(w['ci95'][1])})",
                         "" if w is None else pct(w["length_controlled_win_rate"]), pct(e.get("correct")), f"{per_model[name]['kl_to_sft']['kl_per_sequence']:.3f}".replace("-0.000", "0.000"),
                         per_model[name].get("reward_score"), per_model[name]["heldout_perplexity"], e["mean_tokens"],
                         e["distinct_2"], pct(e["eos_rate"]), _loss_split(e.get("losses_to_reference"), len(prompts))])
            if w is not None:
                bars.append((name, w["win_rate"], *w["ci95"]))
        rep.p(f"**Decoding: {key}.**" + (f" Ceiling: {pct(ceiling[key])}." if key in ceiling else ""))
        rep.table(["model", "win rate vs SFT (95 % CI)", "length-controlled", "correct", "KL to SFT (nats/answer)", "reward-model score",
                   "held-out perplexity", "mean tokens", "distinct-2", "ends with EOS",
                   "losses to the reference: capability / preference"], rows)
        if bars:
            rep.image(plot(plots / f"win_rate_{d.temperature:g}.png", win_rate_figure(bars, ceiling.get(key), key)),
                      f"Win rate vs SFT with 95 % CI, {key}")
        if not tasks or cfg.judge.kind != "scripted":
            continue
        trows = []
        for name in models:
            e = per_model[name]["decodings"][key]
            trows.append([name] + [("reference" if name == "sft" else _with_ci(e["vs_sft_by_task"][t])) +
                                   f" / {pct(e['correct_by_task'][t])}" for t in tasks])
        rep.p("Per task: win rate vs SFT (95 % CI) / correct.")
        rep.table(["model", *tasks], trows)

    # -- reward model and labels
    rep.h2("Reward model and the labels behind it")
    rmm = _json(runs_dir / "reward" / "metrics.json")
    prefs = _json(runs_dir / "prefs" / "metrics.json")
    if rmm:
        t = rmm["test"]
        rep.table(["held-out pair accuracy", "label ceiling", "unanimous pairs", "majority pairs",
                   "annotators' agreement on them", "pairs (train / test)"],
                  [[pct(t["accuracy"]), pct(rmm.get("label_ceiling")), pct(t["by_agreement"].get("unanimous", {}).get("accuracy")),
                    pct(t["by_agreement"].get("majority", {}).get("accuracy")),
                    rmm.get("annotator_agreement_on_test_pairs"), f"{rmm['pairs']['train']} / {rmm['pairs']['test']}"]])
        rep.p("Label ceiling: the annotators' rubric without its noise, scored on the same held-out labels (ties "
              "count half): the accuracy a perfect model of their preferences would reach.")
        kinds = t.get("by_kind") or {}
        if kinds:
            rep.p("By what a pair tells apart: capability = the answers differ in correctness (the reward model must "
                  "check the task itself: the sum, the name in the story); preference = equally correct, different style.")
            rep.table(["pairs", "held-out pair accuracy", "label ceiling", "pairs (test)"],
                      [[k, pct(v["accuracy"]), pct(v.get("label_ceiling")), v["pairs"]] for k, v in sorted(kinds.items())])
    else:
        rep.p("No reward model yet (make reward).")
    provenance = _label_provenance(runs_dir / "prefs" / "train.jsonl")
    if prefs:
        rep.p(f"Labels: {prefs.get('judgments')} judgments; Cohen's kappa on pairs {prefs.get('pair_kappa')}, "
              f"Krippendorff's alpha on rankings {prefs.get('rank_alpha')}, {pct(prefs.get('unanimous_share'))} of "
              f"pairs unanimous. Training pairs by who judged them: "
              + ", ".join(f"{k} {v}" for k, v in provenance.items()) + ".")
    metrics["reward_model"] = {"test": rmm.get("test") if rmm else None, "labels": prefs, "label_provenance": provenance}

    # -- rounds: label -> align -> relabel
    metrics["rounds"] = round_history(stage.root / "rounds", prefs, rmm, per_model, str(decodings[0]))
    if metrics["rounds"]:
        aligned = [n for n in models if n not in ("base", "sft")]
        rep.h2("Rounds")
        rep.p(f"Each `make round` seeds new candidates from the newest aligned policy, labels them, and retrains the "
              f"reward model, DPO and PPO on every round's labels. Win rate vs SFT at {decodings[0]} (95 % CI).")
        rep.table(["round", "seeded from", "pairs (all rounds)", "reward-model accuracy", *aligned],
                  [[r["round"], r["seeded_from"], r["pairs"], pct(r["reward_accuracy"]),
                    *[_with_ci(r["win_rate"][n]) if r["win_rate"].get(n) else "" for n in aligned]]
                   for r in metrics["rounds"]])

    # -- arena
    rep.h2("Arena: blind side-by-side votes")
    rows = load_rows(votes) if votes and Path(votes).exists() and Path(votes).stat().st_size else []
    votes = [(v["left_model"], v["right_model"], v["choice"]) for v in rows]
    if votes:
        names = sorted({v[0] for v in votes} | {v[1] for v in votes})
        ar = ratings(votes, names, anchor="sft", n_boot=200, seed=cfg.seed, groups=[v["prompt_id"] for v in rows])
        metrics["arena"] = ar
        order = sorted(names, key=lambda n: -ar["rating"][n])
        rep.p(f"{ar['votes']} votes (ties count half; 'both bad' carries no preference). Bradley-Terry ratings on the "
              "Elo scale, SFT = 1000, 95 % bootstrap CI over prompts (all votes on a prompt resampled together).")
        rep.table(["model", "rating", "95 % CI", "votes"],
                  [[n, f"{ar['rating'][n]:.0f}", f"{ar['ci95'][n][0]:.0f}-{ar['ci95'][n][1]:.0f}",
                    sum(ar["games"][n].values())] for n in order])
        rep.p("Pairwise: share of points the row model took from the column model.")
        rep.table(["", *order], [[i] + [("" if i == j else pct(ar["win_rate"][i][j])) for j in order] for i in order])
    else:
        rep.p("No arena votes yet (make arena-seed, then vote in the app's Arena tab or run make arena-auto).")

    # -- samples
    rep.h2("The same prompts, every model")
    key = str(decodings[0])
    shown = list(range(0, len(prompts), max(1, len(prompts) // max(1, cfg.samples))))[: cfg.samples]
    rep.table(["prompt", *models], [[prompts[i]["messages"][-1]["content"][:400]] +
                                    [answers[n][key][i].text[:200] for n in models] for i in shown])

    # -- training
    rep.h2("Training")
    rep.image(plot(plots / "training_curves.png", curves_figure(runs_dir)), "Training curves from each stage's logs")
    ppo_hist = (_json(runs_dir / "ppo" / "metrics.json") or {}).get("history")
    if ppo_hist:
        rep.image(plot(plots / "ppo_reward_vs_kl.png", ppo_figure(ppo_hist)), "PPO: reward-model score against KL")
    rep.image(plot(plots / "lengths.png", lengths_figure({n: [len(c.token_ids) for c in answers[n][key]] for n in models},
                                                         key)), f"Answer lengths, {key}")
    prov = {s: stage_provenance(runs_dir / s) for s in ("world", "pretrain", "sft", "seed", "label-auto", "prefs",
                                                         "reward", "dpo", "ppo", "rloo", "arena-seed", "arena-auto")
            if (runs_dir / s / "DONE").exists()}
    metrics["stages"] = prov
    rep.table(["stage", "wall time", "throughput", "git commit", "config sha256", "labels sha256 (train pairs)"],
              [[s, f"{p['wall_time_s']:.0f} s" if p["wall_time_s"] is not None else "", p["throughput"],
                (p["git_commit"] or "")[:10], (p["config_sha256"] or "")[:12], (p["labels_sha256"] or "")[:12]]
               for s, p in prov.items()])

    (stage.root / "report.md").write_text(rep.markdown(stage.root))
    (stage.root / "report.html").write_text(rep.html())
    stage.finish(metrics)
    for d in decodings:
        for name in models:
            w = per_model[name]["decodings"][str(d)].get("vs_sft")
            if w:
                print(f"{name} vs SFT, {d}: win rate {w['win_rate']:.1%} (95 % CI {w['ci95'][0]:.1%}-{w['ci95'][1]:.1%}); "
                      f"ceiling {pct(ceiling.get(str(d)))}")
    print(f"report: {stage.root / 'report.md'} and report.html")
    return metrics


def round_history(folder: Path, prefs: dict | None, rmm: dict | None, per_model: dict, key: str) -> list[dict]:
    """This round's summary saved to folder/round_<n>.json next to the earlier rounds'; all of them, oldest first.
    The round is the newest one the exported labels come from (1 before any `make round`)."""
    if prefs is None:
        return []
    rounds = prefs.get("rounds") or [{"round": 1, "checkpoint": None}]
    latest = max(rounds, key=lambda r: r["round"])
    sha = (latest.get("checkpoint_sha256") or "")[:10]
    entry = {"round": latest["round"], "seeded_from": f"{latest['checkpoint']} ({sha})" if sha else latest["checkpoint"],
             "pairs": prefs.get("pairs_train", 0) + prefs.get("pairs_test", 0),
             "pairs_by_round": prefs.get("pairs_by_round"),
             "reward_accuracy": rmm["test"]["accuracy"] if rmm else None,
             "win_rate": {n: {k: v for k, v in m["decodings"][key]["vs_sft"].items() if k in ("win_rate", "ci95")}
                          for n, m in per_model.items() if m["decodings"][key].get("vs_sft")}}
    write_json(folder / f"round_{entry['round']:03d}.json", entry)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("round_*.json"))]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _label_provenance(path: Path) -> dict:
    """Training pairs by who judged them: automatic annotators (auto-*: the scripted personas or a model judge),
    people, or both."""
    counts = {"automatic": 0, "human": 0, "mixed": 0}
    for r in load_rows(path) if path.exists() else []:
        kinds = {"automatic" if a.startswith("auto-") else "human" for a in r.get("annotators", [])}
        counts["mixed" if len(kinds) > 1 else kinds.pop() if kinds else "automatic"] += 1
    return counts


if __name__ == "__main__":
    cli(main, EvalConfig, {"runs": "the scale's runs directory (runs/<scale>)", "world": "the world stage's directory",
                           "out": "stage output directory",
                           "votes": "arena votes (jsonl from `make arena-export`; optional)",
                           "prompts": "held-out prompts (default: the world's; columns mapped by prompt_source)"},
        __doc__, optional=("votes", "prompts"))
