"""Benchmark: label efficiency. Does active sampling get a good reward model from fewer labels than random?

Run:    make bench-active   (python -m bench.active --model runs/tiny/sft/model --prompts runs/tiny/world/prompts_train.jsonl
                             --heldout-prompts runs/tiny/world/prompts_heldout.jsonl [--budgets 100,200,...])

The pool: the SFT policy answers `--pool-prompts` training prompts k times (the seed stage's decodings);
every pair of a prompt's answers becomes a label as a noisy annotator would give it (the scripted
annotator, strict persona, Gaussian noise --label-noise on its scores, as `make label-auto` uses; pairs
it scores equal are dropped). The test set: held-out prompts' pairs judged without noise (the truth).
Both strategies start from the same random labels and grow to each budget in turn, retraining the reward
model from the SFT checkpoint each time (the reward stage's own training, configs/<scale>/reward.yaml);
the curves are averaged over --seeds runs (each its own pool order and annotator noise):
  random        the next labels are drawn at random from the pool
  margin        the pool pairs the current reward model separates least (smallest |margin|): what the
                app's active sampling does (app.active_sampling)
  disagreement  the pool pairs on which an ensemble of --members reward models (other seeds, same labels)
                disagrees most (largest spread of their margins): uncertainty of the model, not of the pair
Accuracy is always the one reward model (seed 0 of the ensemble), as the reward stage trains it. Prints
held-out pair accuracy per budget, and how many labels each strategy needs to reach --target (goal: an
active strategy needs at most 0.7x of random's).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

from core.annotator import ScriptedAnnotator
from core.config import load_config
from core.data import load_rows
from core.generation import Decoding, chat
from core.model import load_causal_lm
from core.tokenizer import load_tokenizer
from labeling_ui.config import LabelConfig
from reward.train import RewardStageConfig, accuracy_report, pair_scores, train_member


def answers_for(model, tok, prompts: list[dict], cfg: LabelConfig, seed: int) -> list[list[str]]:
    """k answers per prompt, with the seed stage's decodings."""
    s, answers = cfg.seed, []
    for j in range(s.k):
        d = s.decodings[j % len(s.decodings)]
        dec = Decoding(d.temperature, d.top_k, d.top_p, s.max_new_tokens)
        answers.append([c.text for c in chat(model, tok, [p["messages"] for p in prompts], dec,
                                              batch_size=s.batch_size, seed=seed + j)])
    return [sorted({a[i] for a in answers}) for i in range(len(prompts))]


def labeled_pairs(prompts: list[dict], answers: list[list[str]], noise: float, seed: int) -> list[dict]:
    """Every pair of a prompt's answers the annotator (strict persona, this much score noise) does not score equal."""
    judge = ScriptedAnnotator("strict", noise=noise, seed=seed)
    rows = []
    for p, texts in zip(prompts, answers):
        scores = {t: judge.score(p, t) for t in texts}
        for a, b in itertools.combinations(texts, 2):
            if scores[a] != scores[b]:
                win, lose = (a, b) if scores[a] > scores[b] else (b, a)
                rows.append({"prompt": p["messages"], "chosen": [{"role": "assistant", "content": win}],
                             "rejected": [{"role": "assistant", "content": lose}], "prompt_id": p["id"]})
    return rows


def learning_curve(strategy: str, pool: list[dict], test: list[dict], budgets: list[int], rm_cfg, model: str, tok,
                   seed: int, work: Path, members: int = 3) -> list[dict]:
    from torch.utils.tensorboard import SummaryWriter
    rng = random.Random(seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    chosen = order[: budgets[0]]                     # both strategies start from the same random labels
    curve, writer, rms = [], SummaryWriter(str(work / "logs")), []
    for n, budget in enumerate(budgets):
        if n:
            need, taken = budget - len(chosen), set(chosen)
            rest = [i for i in order if i not in taken]
            if strategy == "random":
                picked = rest[:need]
            else:
                margins = [[a - b for a, b in pair_scores(m, tok, [pool[i] for i in rest])] for m in rms]
                if strategy == "margin":    # the pairs the reward model separates least
                    key = [abs(x) for x in margins[0]]
                else:                       # the pairs the ensemble disagrees on most
                    key = [-statistics.pstdev(col) for col in zip(*margins)]
                picked = [i for _, i in sorted(zip(key, rest))][:need]
            chosen += picked
        t0 = time.perf_counter()
        rms = [train_member(rm_cfg, seed + 1000 * k, model, tok, [pool[i] for i in chosen],
                            work / f"{strategy}_{budget}_{k}", work / f"ckpt_{strategy}_{budget}_{k}", writer)[0]
               for k in range(members if strategy == "disagreement" else 1)]
        acc = accuracy_report(test, pair_scores(rms[0], tok, test))["accuracy"]
        curve.append({"labels": len(chosen), "accuracy": acc, "train_s": time.perf_counter() - t0})
        print(f"  {strategy:<7} {len(chosen):>6} labels: held-out accuracy {acc:.1%}", flush=True)
    writer.close()
    return curve


def labels_to_reach(curve: list[dict], target: float) -> float | None:
    """Labels at which the curve first reaches `target`, interpolated linearly between budgets."""
    prev = None
    for point in curve:
        if point["accuracy"] >= target:
            if prev is None or point["accuracy"] == prev["accuracy"]:
                return point["labels"]
            f = (target - prev["accuracy"]) / (point["accuracy"] - prev["accuracy"])
            return prev["labels"] + f * (point["labels"] - prev["labels"])
        prev = point
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/tiny/sft/model")
    ap.add_argument("--prompts", default="runs/tiny/world/prompts_train.jsonl")
    ap.add_argument("--heldout-prompts", default="runs/tiny/world/prompts_heldout.jsonl")
    ap.add_argument("--label-config", default="configs/tiny/label.yaml")
    ap.add_argument("--reward-config", default="configs/tiny/reward.yaml")
    ap.add_argument("--pool-prompts", type=int, default=400)
    ap.add_argument("--test-prompts", type=int, default=200)
    ap.add_argument("--budgets", default="25,50,100,200,400,800")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--label-noise", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--strategies", default="random,margin,disagreement")
    ap.add_argument("--members", type=int, default=3)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    label_cfg = load_config(LabelConfig, args.label_config)
    rm_cfg = load_config(RewardStageConfig, args.reward_config, ["train.save_every=100000"])
    tok, policy = load_tokenizer(args.model), load_causal_lm(args.model)

    t0 = time.perf_counter()
    train_prompts, test_prompts = load_rows(args.prompts)[: args.pool_prompts], load_rows(args.heldout_prompts)[: args.test_prompts]
    train_answers = answers_for(policy, tok, train_prompts, label_cfg, 0)
    test = labeled_pairs(test_prompts, answers_for(policy, tok, test_prompts, label_cfg, 100), 0.0, 0)
    print(f"{args.pool_prompts} training prompts x {label_cfg.seed.k} answers; test: {len(test)} pairs from "
          f"{args.test_prompts} held-out prompts ({time.perf_counter() - t0:.0f} s of generation)")
    runs = {s: [] for s in args.strategies.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench-active-") as work:
        for seed in range(args.seeds):
            pool = labeled_pairs(train_prompts, train_answers, args.label_noise, seed)
            print(f"seed {seed}: pool of {len(pool)} pairs labeled with noise {args.label_noise}")
            for strategy in runs:
                runs[strategy].append(learning_curve(strategy, pool, test, [b for b in budgets if b <= len(pool)],
                                                     rm_cfg, args.model, tok, seed, Path(work) / str(seed),
                                                     args.members))
    curves = {s: [{"labels": pts[0]["labels"], "accuracy": sum(p["accuracy"] for p in pts) / len(pts)}
                  for pts in zip(*c)] for s, c in runs.items()}

    print(f"\nReward-model held-out pair accuracy vs labels, mean of {args.seeds} seeds (reward config "
          f"{args.reward_config}: {rm_cfg.train.epochs:g} epochs per fit)")
    names = list(curves)
    print(f"{'labels':>7} " + " ".join(f"{n:>13}" for n in names))
    for points in zip(*curves.values()):
        print(f"{points[0]['labels']:>7} " + " ".join(f"{p['accuracy']:>13.1%}" for p in points))
    need = {s: labels_to_reach(c, args.target) for s, c in curves.items()}
    print(f"\nlabels to reach {args.target:.0%}:")
    for s in names:
        ratio = (f"  {need[s] / need['random']:.2f}x random's (goal <= 0.70)"
                 if s != "random" and need[s] is not None and need.get("random") else "")
        print(f"  {s:<13} " + (f"{need[s]:.0f}" if need[s] is not None else
                               f"not reached within {curves[s][-1]['labels']}") + ratio)

if __name__ == "__main__":
    main()
