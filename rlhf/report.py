"""The report card, rendered from the figures `make eval` measured: no model is loaded.

Run:    make report     (after make eval; again after more arena votes)
        python -m rlhf.report --runs runs/tiny --eval runs/tiny/eval [--votes runs/tiny/arena/votes.jsonl] [--summary]
Reads:  <eval>/metrics.json (rlhf/evaluate.py's measurements), the stages' metrics.json, config.yaml and logs
        under <runs>, the exported labels' metrics, and the arena votes
Writes: <eval>/report.md, report.html (plots embedded), plots/*.png

The report opens with one sentence that answers "did alignment help?" with the numbers, then the tables.
`--summary` prints the short account `make all` ends with instead: each aligned model against SFT at each
decoding, the ceiling and the shuffled-label control where they exist, the reward model next to the label
ceiling, the perplexity tax, the wall time per stage, and what to run next.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
from pathlib import Path

import yaml

from core.artifacts import both_ways_run, control_runs
from core.data import load_rows
from core.ratings import ratings

CURVES = {"pretrain": ("train/loss", "heldout/loss"), "sft": ("train/loss", "eval/loss"),
          "reward": ("train/loss", "train/accuracy"), "dpo": ("train/loss", "train/rewards/accuracies"),
          "ppo": ("ppo/score", "ppo/kl"), "rloo": ("train/loss", "train/reward")}


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


def kl_guards(runs_dir: Path) -> list[list]:
    """Each aligning stage's KL budget, the largest KL its guard measured (PPO: on each rollout; DPO, RLOO: at its
    checks) and what fired, from the stages' metrics.json and config.yaml."""
    rows = []
    for stage in ("dpo", "ppo", "rloo"):
        m = _json(runs_dir / stage / "metrics.json")
        if not m or not (runs_dir / stage / "DONE").exists():
            continue
        if stage == "ppo":
            rec = yaml.safe_load((runs_dir / stage / "config.yaml").read_text()) or {}
            budget = ((rec.get("config") or {}).get("guards") or {}).get("kl_budget")
            kls, fired = [h["kl"] for h in m.get("history") or []], m.get("guard")
        else:
            g = m.get("guards") or {}
            budget, kls, fired = g.get("kl_budget"), [c["kl"] for c in g.get("checks") or []], g.get("guard")
        rows.append([stage, budget if budget is not None else "none", f"{max(kls):.2f}" if kls else "",
                     "no" if not fired else f"{fired['guard']} at step {fired['step']}"])
    return rows


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
    n = losses.get("answers", n)  # answers judged (several per prompt when sampled); older metrics: one per prompt
    return f"{pct(losses['losses_capability'] / n)} / {pct(losses['losses_preference'] / n)}"


def _with_ci(r: dict, digits: int = 0) -> str:
    return f"{100 * r['win_rate']:.{digits}f} % ({100 * r['ci95'][0]:.{digits}f}-{100 * r['ci95'][1]:.{digits}f})"


def control_table(runs_dir: Path, decodings: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows: the real labels, then each control run of make bench-control (the shuffles, then the pairs
    both ways): the reward model's held-out accuracy on the real labels, DPO's and PPO's win rate vs SFT and correct
    rate per decoding. None where no control has run."""
    runs = [(f"shuffled, shuffle {n}", d) for n, d in control_runs(runs_dir / "control")]
    runs += [("every pair both ways", d) for d in filter(None, [both_ways_run(runs_dir / "control")])]
    if not runs:
        return None

    def win(metrics: dict | None, decoding: str) -> str:
        r = ((metrics or {}).get("vs_sft") or {}).get(decoding)
        return f"{_with_ci(r, 1)}, correct {pct(r['correct_a'])}" if r else ""
    rows = []
    for label, d in [("real labels", runs_dir)] + runs:
        rm = _json(d / "reward" / "metrics.json")
        policies = [_json(d / m / "metrics.json") for m in ("dpo", "ppo")]
        rows.append([label, pct(rm["test"]["accuracy"]) if rm else ""] + [win(m, k) for m in policies for k in decodings])
    return (["labels", "reward model, held-out pairs"] + [f"{m} vs SFT, {k}" for m in ("DPO", "PPO") for k in decodings],
            rows)


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


ALIGNED = ("dpo", "ppo", "rloo")
STAGES = ("world", "pretrain", "sft", "seed", "label-auto", "prefs", "reward", "dpo", "ppo", "rloo", "arena-seed",
          "arena-auto", "eval")


def verdict(metrics: dict) -> str:
    """One sentence: did alignment help, by how much, and, on the world's prompts, what SFT's losses were."""
    decodings = [d["name"] for d in metrics["decodings"]]
    first, per_model = decodings[0], metrics["per_model"]
    aligned = [n for n in ALIGNED if n in per_model and per_model[n]["decodings"][first].get("vs_sft")]
    if not aligned:
        return "Did alignment help? Not measured yet: no aligned model has finished (make dpo, make ppo)."
    wins = {n: per_model[n]["decodings"][first]["vs_sft"] for n in aligned}
    better = [n for n in aligned if wins[n]["ci95"][0] > 0.5]
    worse = [n for n in aligned if wins[n]["ci95"][1] < 0.5]
    answer = ("Yes" if better and not worse else "No" if not better else "Partly")
    ranked = sorted(aligned, key=lambda n: -wins[n]["win_rate"])
    text = (f"Did alignment help? {answer}: against SFT on {metrics['prompts']} held-out prompts at {first}, "
            + ", ".join(f"{n.upper()} won {_with_ci(wins[n], 1)}" for n in ranked))
    for d in decodings[1:]:
        rest = [(n, per_model[n]["decodings"][d].get("vs_sft")) for n in ranked]
        text += f"; at {d}: " + ", ".join(f"{n.upper()} {pct(w['win_rate'])}" for n, w in rest if w)
    if metrics.get("ceiling"):
        text += f". The ceiling (the reference answers against SFT) is {pct(metrics['ceiling'][first])}"
    losses = per_model.get("sft", {}).get("decodings", {}).get(first, {}).get("losses_to_reference")
    if losses:
        n = losses.get("answers", metrics["prompts"])
        text += (f"; SFT lost to the reference on {pct(losses['losses_capability'] / n)} of its answers for capability "
                 f"(the task failed) and on {pct(losses['losses_preference'] / n)} for preference (done, but worse by "
                 "the rubric's style)")
    return text + "."


def render(metrics: dict, runs_dir: Path, out: Path, votes: Path | None) -> dict:
    """Write out/report.md and report.html from the measured figures; returns what it derived on the way
    (arena ratings, stage provenance, the reward model's figures) for the caller's metrics."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    per_model, ceiling, judge = metrics["per_model"], metrics["ceiling"], metrics["judge"]
    models, missing, n_prompts = metrics["models"], metrics["missing"], metrics["prompts"]
    decodings, prompt_set = metrics["decodings"], metrics["prompt_set"]
    tasks, agreement = prompt_set["tasks"], judge["agreement_with_held_out_labels"]
    derived = {}
    sampled = max((e.get("answers_per_prompt", 1) for m in per_model.values() for e in m["decodings"].values()), default=1)
    rep = Report(f"Alignment report: {runs_dir}")
    rep.p("**" + verdict(metrics) + "**")
    rep.p(f"Models: {', '.join(models)}" + (f". Not built yet: {', '.join(missing)}." if missing else "."))
    rep.p(f"{n_prompts} held-out prompts" + (f" ({prompt_set['per_task']} per task: {', '.join(tasks)})" if tasks else
                                             f" from {prompt_set['file']}") +
          f", the same seeds for every model" +
          (f"; sampled, {sampled} answers per prompt, each against SFT's answer of the same seed" if sampled > 1 else "") +
          f". Judge: {judge['name']}" +
          (f", which agrees with {pct(agreement['accuracy'])} of {agreement['pairs']} held-out labelled "
           "pairs" if agreement else "") +
          (f"; {judge['parse_failures']} of its verdicts named neither answer (counted as ties)"
           if judge["kind"] == "llm" else "") +
          ". Win rate = the judge prefers the model's answer to SFT's on the same prompt (ties count half), with a "
          "95 % bootstrap CI over prompts; length-controlled = the same with the answers' length difference regressed out "
          "(AlpacaEval 2 style), so a judge that merely likes longer answers shows.")
    if ceiling:
        rep.p("Ceiling = the world's reference answers against the same SFT answers: ties count half, so no policy can "
              "beat it. Losses to the reference split by cause: capability = the task failed (wrong answer, missing "
              "item); preference = the task done but worse by the rubric's style (chatter, no kind closing, rambling, "
              "rudeness): what preference learning can fix.")

    # -- headline
    rep.h2("Did alignment help?")
    for dec in decodings:
        key = dec["name"]
        rows, bars = [], []
        for name in models:
            e = per_model[name]["decodings"][key]
            w = e.get("vs_sft")
            rows.append([name, "reference" if w is None else _with_ci(w, 1),
                         "" if w is None else pct(w["length_controlled_win_rate"]) or "n/a", pct(e.get("correct")),
                         f"{per_model[name]['kl_to_sft']['kl_per_sequence']:.3f}".replace("-0.000", "0.000"),
                         per_model[name].get("reward_score"), per_model[name]["heldout_perplexity"], e["mean_tokens"],
                         e["distinct_2"], pct(e["eos_rate"]), _loss_split(e.get("losses_to_reference"), n_prompts)])
            if w is not None:
                bars.append((name, w["win_rate"], *w["ci95"]))
        rep.p(f"**Decoding: {key}.**" + (f" Ceiling: {pct(ceiling[key])}." if key in ceiling else ""))
        rep.table(["model", "win rate vs SFT (95 % CI)", "length-controlled", "correct", "KL to SFT (nats/answer)",
                   "reward-model score", "held-out perplexity", "mean tokens", "distinct-2", "ends with EOS",
                   "losses to the reference: capability / preference"], rows)
        if bars:
            rep.image(plot(plots / f"win_rate_{dec['temperature']:g}.png", win_rate_figure(bars, ceiling.get(key), key)),
                      f"Win rate vs SFT with 95 % CI, {key}")
        if not tasks or judge["kind"] != "scripted":
            continue
        trows = []
        for name in models:
            e = per_model[name]["decodings"][key]
            trows.append([name] + [("reference" if name == "sft" else _with_ci(e["vs_sft_by_task"][t])) +
                                   f" / {pct(e['correct_by_task'][t])}" for t in tasks])
        rep.p("Per task: win rate vs SFT (95 % CI) / correct.")
        rep.table(["model", *tasks], trows)

    control = control_table(runs_dir, [d["name"] for d in decodings])
    rep.p("**Is the gain the labels'?** The same reward model, DPO and PPO trained on the same pairs with their direction "
          "taken away (make bench-control): chosen and rejected swapped at random (a shuffle), or every pair written "
          "once each way (no direction at all). Against SFT as above, each stage's own figures; the reward model on the "
          "real held-out labels." if control else
          "**Is the gain the labels'?** Not measured yet: make bench-control trains the same stages on the pairs with "
          "their direction taken away.")
    if control:
        rep.table(*control)

    # -- reward model and labels
    rep.h2("Reward model and the labels behind it")
    rmm = _json(runs_dir / "reward" / "metrics.json")
    prefs = _json(runs_dir / "prefs" / "metrics.json")
    if rmm:
        t = rmm["test"]
        rep.table(["held-out pair accuracy", "label ceiling", "unanimous pairs", "majority pairs",
                   "annotators' agreement on them", "pairs (train / test)"],
                  [[pct(t["accuracy"]), pct(rmm.get("label_ceiling")),
                    pct(t["by_agreement"].get("unanimous", {}).get("accuracy")),
                    pct(t["by_agreement"].get("majority", {}).get("accuracy")),
                    rmm.get("annotator_agreement_on_test_pairs"), f"{rmm['pairs']['train']} / {rmm['pairs']['test']}"]])
        rep.p("Label ceiling: the annotators' rubric without its noise, scored on the same held-out labels (ties "
              "count half): the accuracy a perfect model of their preferences would reach.")
        if rmm.get("ensemble"):
            e = rmm["ensemble"]
            rep.p(f"An ensemble of {e['members']} reward models (their own seeds) was trained; PPO and RLOO reward with "
                  f"their mean score, which orders {pct(e['mean_score_accuracy'])} of the held-out pairs (members: "
                  + ", ".join(pct(a) for a in e["member_accuracy"]) + "; the table shows the first).")
        kinds = t.get("by_kind") or {}
        shuffles = control_runs(runs_dir / "control")
        implicit = [(head, m) for head, m in [
            ("DPO's implicit reward", (_json(runs_dir / "dpo" / "metrics.json") or {}).get("implicit_reward_test"))] + [
            ("the control DPO's" + (f", shuffle {n}" if len(shuffles) > 1 else ""),
             (_json(d / "dpo" / "metrics.json") or {}).get("implicit_reward_test")) for n, d in shuffles] + [
            ("the control DPO's, pairs both ways", (_json(d / "dpo" / "metrics.json") or {}).get("implicit_reward_test"))
            for d in filter(None, [both_ways_run(runs_dir / "control")])]
            if m]
        if kinds:
            rep.p("By what a pair tells apart: capability = the answers differ in correctness (the reward model must "
                  "check the task itself: the sum, the name in the story); preference = equally correct, different style; "
                  "capability pairs again by whether the more correct reply also has the better style (style with) or the "
                  "worse (style against: a judge that reads the style but cannot check the task orders these backwards)."
                  + (" Next to it, the DPO policy's implicit reward (beta * log pi / pi_SFT over the reply's tokens, or "
                     "beta * (1 - pi_SFT / pi) under forward KL: the same order of every pair), "
                     "learned from the same training pairs, on the same held-out pairs; the control DPO's, trained on them "
                     "with their direction shuffled or written both ways (make bench-control), is what it knows "
                     "without the labels."
                     if implicit else ""))

            def cell(m: dict, kind: str) -> str:
                if kind == "all":
                    part = m
                elif kind.startswith("capability, "):
                    part = m.get("capability_by_style", {}).get(kind.removeprefix("capability, "), {})
                else:
                    part = m.get("by_kind", {}).get(kind, {})
                return pct(part.get("accuracy"))
            groups = [("all", t)] + sorted(kinds.items()) + [
                (f"capability, {k}", v) for k, v in sorted(t.get("capability_by_style", {}).items(), reverse=True)]
            rep.table(["pairs", "reward model", *(h for h, _ in implicit), "label ceiling", "pairs (test)"],
                      [[k, pct(v["accuracy"]), *(cell(m, k) for _, m in implicit), pct(v.get("label_ceiling")), v["pairs"]]
                       for k, v in groups])
    else:
        rep.p("No reward model yet (make reward).")
    provenance = _label_provenance(runs_dir / "prefs" / "train.jsonl")
    if prefs:
        rep.p(f"Labels: {prefs.get('judgments')} judgments; Cohen's kappa on pairs {prefs.get('pair_kappa')}, "
              f"Krippendorff's alpha on rankings {prefs.get('rank_alpha')}, {pct(prefs.get('unanimous_share'))} of "
              f"pairs unanimous. Training pairs by who judged them: "
              + ", ".join(f"{k} {v}" for k, v in provenance.items()) + ".")
    derived["reward_model"] = {"test": rmm.get("test") if rmm else None, "labels": prefs, "label_provenance": provenance}

    # -- rounds: label -> align -> relabel
    if metrics.get("rounds"):
        aligned = [n for n in models if n not in ("base", "sft")]
        rep.h2("Rounds")
        rep.p(f"Each `make round` seeds new candidates from the newest aligned policy, labels them, and retrains the "
              f"reward model, DPO and PPO on every round's labels. Win rate vs SFT at {decodings[0]['name']} (95 % CI).")
        rep.table(["round", "seeded from", "pairs (all rounds)", "reward-model accuracy", *aligned],
                  [[r["round"], r["seeded_from"], r["pairs"], pct(r["reward_accuracy"]),
                    *[_with_ci(r["win_rate"][n]) if r["win_rate"].get(n) else "" for n in aligned]]
                   for r in metrics["rounds"]])

    # -- arena
    rep.h2("Arena: blind side-by-side votes")
    rows = load_rows(votes) if votes and Path(votes).exists() and Path(votes).stat().st_size else []
    pairs = [(v["left_model"], v["right_model"], v["choice"]) for v in rows]
    if pairs:
        names = sorted({v[0] for v in pairs} | {v[1] for v in pairs})
        ar = ratings(pairs, names, anchor="sft", n_boot=200, seed=metrics["seed"], groups=[v["prompt_id"] for v in rows])
        derived["arena"] = ar
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
    key = decodings[0]["name"]
    rep.h2("The same prompts, every model")
    rep.table(["prompt", *models], [[s["prompt"][:400]] + [s["answers"][n][:200] for n in models]
                                    for s in metrics["samples"]])

    # -- training
    rep.h2("Training")
    rep.image(plot(plots / "training_curves.png", curves_figure(runs_dir)), "Training curves from each stage's logs")
    ppo_hist = (_json(runs_dir / "ppo" / "metrics.json") or {}).get("history")
    if ppo_hist:
        rep.image(plot(plots / "ppo_reward_vs_kl.png", ppo_figure(ppo_hist)), "PPO: reward-model score against KL")
    rep.image(plot(plots / "lengths.png", lengths_figure(metrics["lengths"], key)), f"Answer lengths, {key}")
    guards = kl_guards(runs_dir)
    if guards:
        rep.p("KL guards: past its budget a stage rolls back to its last policy within it and stops. PPO measures "
              "KL on every rollout, DPO and RLOO at their checks (64 training prompts, temperature 1).")
        rep.table(["stage", "KL budget (nats/answer)", "largest KL measured", "guard fired"], guards)
    prov = {s: stage_provenance(runs_dir / s) for s in STAGES[:-1] if (runs_dir / s / "DONE").exists()}
    derived["stages"] = prov
    rep.table(["stage", "wall time", "throughput", "git commit", "config sha256", "labels sha256 (train pairs)"],
              [[s, f"{p['wall_time_s']:.0f} s" if p["wall_time_s"] is not None else "", p["throughput"],
                (p["git_commit"] or "")[:10], (p["config_sha256"] or "")[:12], (p["labels_sha256"] or "")[:12]]
               for s, p in prov.items()])

    (out / "report.md").write_text(rep.markdown(out))
    (out / "report.html").write_text(rep.html())
    return derived


def summary(metrics: dict, runs_dir: Path, out: Path) -> list[str]:
    """The few lines `make all` ends with (pure: reads the stages' metrics.json files)."""
    lines = [verdict(metrics)]
    names = [d["name"] for d in metrics["decodings"]]
    per_model = metrics["per_model"]
    lines.append(f"  {'':<30}" + "".join(f"{n.split(', max_new_tokens')[0]:<26}" for n in names))
    for m in (n for n in ALIGNED if n in per_model):
        cells = [per_model[m]["decodings"][n].get("vs_sft") for n in names]
        lines.append(f"  {m.upper() + ' vs SFT':<30}" + "".join(f"{_with_ci(w, 1) if w else '':<26}" for w in cells))
    if metrics.get("ceiling"):
        lines.append(f"  {'ceiling (reference vs SFT)':<30}" + "".join(f"{pct(metrics['ceiling'][n]):<26}" for n in names))

    def cell(control: dict, decoding: str) -> str:  # per model, one run's win rate or the range over several
        wins = {m: [c["vs_sft"][decoding]["win_rate"] for c in cs] for m, cs in control.items() if cs}
        return ", ".join(f"{m.upper()} " + (pct(w[0]) if len(w) == 1 else f"{100 * min(w):.1f}-{pct(max(w))}")
                         for m, w in wins.items())
    shuffles, both = control_runs(runs_dir / "control"), both_ways_run(runs_dir / "control")
    heads = [(f"control: {len(shuffles)} label shuffles" if len(shuffles) > 1 else "control: shuffled labels",
              [d for _, d in shuffles])] + ([("control: pairs both ways", [both])] if both else [])
    controls = [(head, {m: [c for c in (_json(d / m / "metrics.json") for d in dirs) if c] for m in ("dpo", "ppo")})
                for head, dirs in heads]
    shown = [(head, control) for head, control in controls if any(control.values())]
    for head, control in shown:
        lines.append(f"  {head:<30}" + "".join(f"{cell(control, n) + ' ':<26}" for n in names))
    if not shown:
        lines.append("  control (shuffled labels): not run; `make bench-control` shows whether the gain is the labels'")
    rmm = _json(runs_dir / "reward" / "metrics.json")
    if rmm:
        ceiling = f"; label ceiling {pct(rmm['label_ceiling'])}" if rmm.get("label_ceiling") is not None else ""
        agree = rmm.get("annotator_agreement_on_test_pairs")
        implicit = (_json(runs_dir / "dpo" / "metrics.json") or {}).get("implicit_reward_test")
        lines.append(f"Reward model: {pct(rmm['test']['accuracy'])} held-out pair accuracy on {rmm['pairs']['test']} "
                     f"pairs{ceiling}" + (f"; annotators' agreement on them {agree}" if agree is not None else "")
                     + (f"; DPO's implicit reward {pct(implicit['accuracy'])}" if implicit else ""))
    base = per_model.get("base", {}).get("heldout_perplexity")
    lines.append("Held-out perplexity (the alignment tax): " + ", ".join(
        f"{n} {per_model[n]['heldout_perplexity']:.3f}" + (f" ({per_model[n]['heldout_perplexity'] / base:.2f}x)"
                                                            if base and n != "base" else "")
        for n in metrics["models"]))
    times = {s: (_json(runs_dir / s / "metrics.json") or {}).get("wall_time_s") for s in STAGES}
    times = {s: t for s, t in times.items() if t is not None}
    if times:
        total = sum(times.values())
        lines.append(f"Stage times ({total // 60:.0f} min {total % 60:.0f} s in all): "
                     + ", ".join(f"{s} {t:.0f} s" for s, t in times.items()))
    lines.append(f"Report: {out / 'report.html'} (and report.md)")
    lines.append("Next: `make user NAME=you ROLE=admin` then `make label` to label yourself; `make round AUTO=1` "
                 "for another round; `make bench-control` for the shuffled-label control")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="the scale's runs directory (runs/<scale>)")
    ap.add_argument("--eval", required=True, help="the eval stage's directory (its metrics.json)")
    ap.add_argument("--votes", help="arena votes (jsonl exported from the label store)")
    ap.add_argument("--summary", action="store_true", help="print the short account instead of rendering")
    args = ap.parse_args()
    path = Path(args.eval) / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no measured figures; run `make eval` first")
    metrics = json.loads(path.read_text())
    if args.summary:
        print("\n".join(summary(metrics, Path(args.runs), Path(args.eval))))
        return
    render(metrics, Path(args.runs), Path(args.eval), Path(args.votes) if args.votes else None)
    print(verdict(metrics))
    print(f"report: {Path(args.eval) / 'report.md'} and report.html")


if __name__ == "__main__":
    main()
