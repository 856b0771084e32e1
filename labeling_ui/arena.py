"""Arena: every finished model answers the same held-out prompts; people (or the scripted annotator) vote blind.

Run:    make arena-seed     (python -m labeling_ui.arena seed --config configs/tiny/label.yaml --db data/labels_tiny.db
                             --prompts runs/tiny/world/prompts_heldout.jsonl --out runs/tiny/arena-seed
                             --model base=runs/tiny/pretrain/model --model sft=runs/tiny/sft/model ...)
        make label          (the app's Arena tab: two anonymous answers, vote, then see which models they were)
        make arena-auto     (python -m labeling_ui.arena auto --config ... --db ... --out runs/tiny/arena-auto)
        make arena-export   (python -m labeling_ui.arena export --config ... --db ... --out runs/tiny/arena)
Reads:  the models' checkpoints, held-out prompts (arena.per_task per task; a prompt set mapped by
        prompt_source, like `make seed`'s); the store's open matches
Votes in `make arena-auto` come from auto.judge: the scripted personas (world prompts only), or one
reward-model / LLM judge (core.judges) as annotator "auto-<kind>".
Writes: into the labeling store: arena answers (model, checkpoint sha256, decoding, seed) and votes
        (annotator, which answer was left / right, choice); <out>/config.yaml, metrics.json, DONE;
        export: <out>/votes.jsonl (the votes between current answers, for `make eval`)

Seeding is idempotent per checkpoint: a model whose checkpoint is unchanged is not asked again; a
retrained one answers anew and its old answers (and their votes) leave the matchmaking, kept in the
store. `make eval` turns the votes between current answers into Bradley-Terry ratings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

from core.annotator import first_per_task
from core.artifacts import StageDir, atomic_write_text
from core.config import UserError, load_config
from core.data import fit_prompts, load_prompts
from core.generation import Decoding, chat
from core.model import context_length, load_causal_lm, to_inference_device
from core.tokenizer import load_tokenizer
from labeling_ui.config import LabelConfig, named_checkpoints
from labeling_ui.auto import team, verdict
from labeling_ui.seed import candidate_seed, checkpoint_sha256
from labeling_ui.store import Store


def seed(cfg: LabelConfig, models: dict[str, str], prompts: str, db: str, out: str) -> dict:
    a = cfg.arena
    if len(models) < 2:
        raise UserError(f"the arena needs at least two models, got {', '.join(models) or 'none'}: finish `make sft` "
                        "and an aligning stage (make dpo / ppo) first")
    first = next(iter(models.values()))
    rows = load_prompts(prompts, cfg.prompt_source, "prompt_source")
    rows = first_per_task(fit_prompts(rows, load_tokenizer(first), context_length(first), a.max_new_tokens,
                                      cfg.prompt_source, prompts, "prompt_source"), a.per_task)
    stage = StageDir(out)
    stage.start(cfg, inputs={"prompts": prompts}, stage_file=__file__)
    store = Store(db)
    store.add_prompts(rows)
    decoding = Decoding(a.temperature, max_new_tokens=a.max_new_tokens)
    per_model = {}
    for name, path in models.items():
        sha = checkpoint_sha256(Path(path))
        have = {r["prompt_id"] for r in store.arena_answers() if r["model"] == name and r["checkpoint_sha"] == sha}
        todo = [r for r in rows if r["id"] not in have]
        seeds = [candidate_seed(a.seed, r["id"], 0) for r in todo]
        comps = chat(to_inference_device(load_causal_lm(path)), load_tokenizer(path), [r["messages"] for r in todo], decoding,
                     row_seeds=seeds) if todo else []
        added = store.add_arena_answers(name, sha, [
            {"prompt_id": r["id"], "text": c.text, "decoding": {"temperature": a.temperature,
                                                                 "max_new_tokens": a.max_new_tokens}, "seed": s}
            for r, c, s in zip(todo, comps, seeds)])
        per_model[name] = {"checkpoint": path, "checkpoint_sha256": sha, "answers_added": added}
        print(f"arena: {name} answered {added} new prompts ({len(rows) - len(todo)} already stored)")
    metrics = {"prompts": len(rows), "decoding": str(decoding), "models": per_model, "store": store.counts()}
    stage.finish(metrics)
    return metrics


def auto(cfg: LabelConfig, db: str, out: str) -> dict:
    """The automatic annotators (auto.judge) vote through the same store calls the Arena tab makes."""
    stage = StageDir(out)
    stage.start(cfg, stage_file=__file__)
    store = Store(db)
    votes: Counter = Counter()
    voters = team(cfg, store)
    for name, who in voters:
        rng = random.Random(f"arena:{name}")
        while not cfg.arena.auto_votes or votes[name] < cfg.arena.auto_votes:
            match = store.next_match(name, rng)
            if match is None:
                break
            store.arena_vote(name, match.left, match.right, verdict(who, match.prompt, *match.texts))
            votes[name] += 1
    all_votes = store.arena_votes()
    metrics = {"votes_added": sum(votes.values()), "by_annotator": dict(votes), "votes_current": len(all_votes),
               "choices": dict(Counter(v["choice"] for v in all_votes))}
    stage.finish(metrics)
    print(f"arena: {', '.join(name for name, _ in voters)} cast {metrics['votes_added']} votes; {len(all_votes)} between current answers")
    return metrics


def export(db: str, out: str) -> int:
    """The votes between current answers as jsonl (<out>/votes.jsonl), for `make eval`. The file is
    rewritten only when the votes changed, so make rebuilds the report only then."""
    rows = [{k: v[k] for k in ("id", "annotator", "prompt_id", "left_model", "right_model", "left_sha", "right_sha",
                               "choice", "shown_at", "voted_at")} for v in Store(db).arena_votes()]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    path = Path(out) / "votes.jsonl"
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    print(f"arena: {len(rows)} votes between current answers -> {path}")
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["seed", "auto", "export"])
    ap.add_argument("--config", required=True, help="configs/<scale>/label.yaml (the arena: section)")
    ap.add_argument("--db", required=True, help="labeling store (SQLite file or postgresql:// URL)")
    ap.add_argument("--out", required=True, help="stage output directory")
    ap.add_argument("--prompts", help="held-out prompt rows (seed)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a model to answer (seed; repeat)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. arena.per_task=10")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(LabelConfig, args.config, args.overrides)
        if args.command == "seed":
            if not args.prompts:
                raise UserError("arena seed needs --prompts (held-out prompt rows)")
            seed(cfg, named_checkpoints(args.model), args.prompts, args.db, args.out)
        elif args.command == "auto":
            auto(cfg, args.db, args.out)
        else:
            export(args.db, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
