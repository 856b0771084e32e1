"""Evaluate: did alignment help, by how much, at what cost? One report card for every finished model.

Run:    make eval
        python -m rlhf.evaluate --config configs/tiny/eval.yaml --runs runs/tiny --world runs/tiny/world \
            --votes runs/tiny/arena/votes.jsonl --out runs/tiny/eval
Reads:  <runs>/{pretrain,sft,dpo,ppo,rloo}/ (whichever finished: model/, metrics.json, config.yaml, logs/),
        <runs>/reward/ and <runs>/prefs/ (reward model, its accuracy, the labels it was trained on),
        the world's held-out prompts and held-out corpus, and the arena votes (exported from the label store)
Writes: <out>/metrics.json (every figure, and the answers the report shows), report.md, report.html (plots
        embedded), plots/*.png (rendered by rlhf/report.py, which `make report` reruns without models),
        config.yaml, DONE (last)

Every model answers the same held-out prompts (the world's, or --prompts mapped by prompt_source) at
each decoding of `temperatures`, with the same seeds; `answers_per_prompt` times when sampling, each answer
judged against SFT's of the same seed. Against the SFT policy's answers the judge
(core.judges: scripted, reward_model or llm) gives a win rate (ties count half, 95 % bootstrap CI)
and a length-controlled one; on world prompts also per task, next to the ceiling a perfect policy
would reach (the world's reference answers against SFT), and the judge's agreement with the
held-out labels. Per model also: correctness, mean reward-model score, KL
to SFT, held-out corpus perplexity (does alignment cost language modelling?), answer length,
distinct-n, EOS rate. The training-side figures (curves, wall times, hashes) are read from what
the stages wrote; nothing is retrained. Arena votes become Bradley-Terry ratings.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.annotator import ScriptedAnnotator, compare_answers, distinct_rate, first_per_task, losses_to_reference
from core.artifacts import StageDir, write_json
from core.compare import kl_to_reference, sample_answers
from core.config import UserError, cli
from core.data import PromptSource, fit_prompts, load_preferences, load_prompts, load_rows
from core.generation import Decoding, completion_logprobs
from core.judges import JudgeSettings, agreement, is_world_prompt, make_judge, pairwise, win_rate
from core.model import context_length, load_causal_lm, to_inference_device
from core.tokenizer import load_tokenizer
from rlhf.report import _json, render, verdict

MODELS = (("base", "pretrain"), ("sft", "sft"), ("dpo", "dpo"), ("ppo", "ppo"), ("rloo", "rloo"))


@dataclass
class EvalConfig:
    seed: int = 0
    per_task: int = 50                 # held-out prompts per task (4 tasks: 200)
    skip_per_task: int = 0             # > 0: the next prompts of each task instead (a sample no setting was chosen on)
    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.0])   # 0 = greedy
    max_new_tokens: int = 64
    answers_per_prompt: int = 4        # sampled answers per prompt at temperature > 0 (greedy: one); core/compare.py
    perplexity_docs: int = 200         # held-out corpus documents for perplexity
    samples: int = 6                   # prompts in the side-by-side table
    bootstrap: int = 2000
    judge: JudgeSettings = field(default_factory=JudgeSettings)       # who compares each answer with SFT's
    prompt_source: PromptSource = field(default_factory=PromptSource)  # which columns of --prompts hold what

    def validate(self) -> None:
        if (self.per_task < 1 or not self.temperatures or self.samples < 0 or self.perplexity_docs < 1
                or self.answers_per_prompt < 1):
            raise UserError("eval: need per_task >= 1, at least one temperature, samples >= 0, perplexity_docs >= 1, "
                            "answers_per_prompt >= 1")


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


# ---------------------------------------------------------------- the stage

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
    torch.set_num_threads(os.cpu_count())

    decodings = [Decoding(t, max_new_tokens=cfg.max_new_tokens) for t in cfg.temperatures]
    convs, n = [p["messages"] for p in prompts], len(prompts)

    def load(name: str):
        return to_inference_device(load_causal_lm(present[name] / "model").eval())

    def answer(m) -> dict:
        # sampled: answers_per_prompt answers each, sample-major (answer j to prompt i at j * n + i); greedy: one
        return {str(d): sample_answers(m, tok, convs, d, cfg.seed, cfg.answers_per_prompt) for d in decodings}

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
            k = len(comps) // n  # rates over every answer, CIs and tests over prompts
            texts, every = [c.text for c in comps], prompts * k
            # distinct: over one answer per prompt (repeated samples of a short answer are not a collapse)
            entry = {"mean_tokens": round(sum(len(c.token_ids) for c in comps) / len(comps), 1),
                     "eos_rate": round(sum(c.finished for c in comps) / len(comps), 3),
                     "answers_per_prompt": k, "distinct_answers": distinct_rate(texts[:n]),
                     "distinct_1": distinct_n(texts[:n], 1), "distinct_2": distinct_n(texts[:n], 2)}
            if world_prompts:
                entry["correct"] = round(sum(scripted.is_correct(p, t) for p, t in zip(every, texts)) / len(texts), 3)
                entry["correct_by_task"] = {t: round(sum(scripted.is_correct(p, x) for p, x in zip(every, texts)
                                                         if p["task"] == t) / sum(p["task"] == t for p in every), 3)
                                            for t in tasks}
                # Where the model loses to the best answer: the task failed (capability) or done worse (preference).
                entry["losses_to_reference"] = losses_to_reference(every, texts, scripted)
            if name != "sft":
                entry["vs_sft"] = pairwise(judge.compare(every, texts, [c.text for c in ref]),
                                           [len(c.token_ids) for c in comps], [len(c.token_ids) for c in ref],
                                           cfg.bootstrap, cfg.seed, k)
                if cfg.judge.kind == "scripted":
                    entry["vs_sft_by_task"] = {}
                    for t in tasks:
                        idx = [i for i, p in enumerate(prompts) if p["task"] == t]
                        pick = [j * n + i for j in range(k) for i in idx]
                        entry["vs_sft_by_task"][t] = compare_answers([prompts[i] for i in idx], [texts[i] for i in pick],
                                                                     [ref[i].text for i in pick], scripted,
                                                                     cfg.bootstrap, cfg.seed, samples=k)
            r["decodings"][str(d)] = entry
        if rm is not None:
            scores = reward_scores(rm, rm_tok, [c + [{"role": "assistant", "content": a.text}]
                                               for c, a in zip(convs * (len(answers[name][first]) // n),
                                                               answers[name][first])])
            r["reward_score"] = round(sum(scores) / len(scores), 3)
        r["kl_to_sft"] = kl_to_reference(m, sft, tok, prompts, cfg.max_new_tokens, cfg.seed)
        r["heldout_perplexity"] = corpus_perplexity(m, tok, docs, m.config.max_position_embeddings)
        per_model[name] = r
        del m  # before the next one is loaded
    del sft
    models = list(present)
    ceiling = {}
    for d in decodings if world_prompts else ():
        k = len(answers["sft"][str(d)]) // n
        ceiling[str(d)] = win_rate(judge.compare(prompts * k, [p["reference"] for p in prompts] * k,
                                                 [c.text for c in answers["sft"][str(d)]]), cfg.bootstrap, samples=k)["win_rate"]
    held_out_pairs = runs_dir / "prefs" / "test.jsonl"
    judge_agreement = agreement(judge, {p["id"]: p for p in load_rows(world_dir / "prompts_train.jsonl")},
                                load_preferences(held_out_pairs)) if world_prompts and held_out_pairs.exists() else None

    metrics = {"prompts": len(prompts), "models": list(models), "missing": missing, "per_model": per_model,
               "ceiling": ceiling, "judge": {"kind": cfg.judge.kind, "name": judge.name,
                                             "parse_failures": judge.parse_failures,
                                             "agreement_with_held_out_labels": judge_agreement}}
    key = str(decodings[0])
    shown = list(range(0, len(prompts), max(1, len(prompts) // max(1, cfg.samples))))[: cfg.samples]
    metrics.update({
        "seed": cfg.seed,
        "decodings": [{"name": str(d), "temperature": d.temperature} for d in decodings],
        "prompt_set": {"file": str(prompt_file), "per_task": cfg.per_task, "tasks": tasks},
        # what the report shows of the answers themselves, so `make report` needs no model
        "samples": [{"prompt": prompts[i]["messages"][-1]["content"],
                     "answers": {n: answers[n][key][i].text for n in models}} for i in shown],
        "lengths": {n: [len(c.token_ids) for c in answers[n][key]] for n in models},
    })
    metrics["rounds"] = round_history(stage.root / "rounds", _json(runs_dir / "prefs" / "metrics.json"),
                                      _json(runs_dir / "reward" / "metrics.json"), per_model, key)
    metrics.update(render(metrics, runs_dir, stage.root, Path(votes) if votes else None))
    stage.finish(metrics)
    print(verdict(metrics))
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


if __name__ == "__main__":
    cli(main, EvalConfig, {"runs": "the scale's runs directory (runs/<scale>)", "world": "the world stage's directory",
                           "out": "stage output directory",
                           "votes": "arena votes (jsonl from `make arena-export`; optional)",
                           "prompts": "held-out prompts (default: the world's; columns mapped by prompt_source)"},
        __doc__, optional=("votes", "prompts"))
