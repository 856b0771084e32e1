"""Seed: generate k candidate responses per training prompt from the current policy and queue them for labeling.

Run:    make seed
        python -m labeling_ui.seed --config configs/tiny/label.yaml --model runs/tiny/sft/model \
            --prompts runs/tiny/world/prompts_train.jsonl --db data/labels_tiny.db --out runs/tiny/seed \
            [--reward-model runs/tiny/reward/model] [seed.k=4 ...]
Reads:  the policy checkpoint; prompt rows (the world's {"id", "messages", ...task fields}, or any prompt set
        whose columns `prompt_source` maps: text, chat messages or HH transcripts); optionally a reward model
Writes: into the labeling store (--db): prompts, candidates with provenance (checkpoint path + sha256,
        decoding, seed, token count, EOS, log p), and items: each prompt becomes one "rank" item (all
        k candidates) or one "pair" item (two of them), by seed.rank_fraction;
        <out>/config.yaml, metrics.json, DONE (last)

Rounds: each generating checkpoint is one labeling round (the store numbers them: the SFT policy is round
1, `make round` seeds round 2 from the newest aligned policy, ...). Round n takes the n-th block of
seed.prompts training prompts (wrapping around), so later rounds ask about new prompts.

Idempotent: a candidate is keyed by (prompt, checkpoint sha256, decoding, seed), each seed derived
from the prompt id, so rerunning (also after a crash halfway) adds nothing twice. With a reward
model, each item records the smallest score gap between its candidates (active sampling uses it).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict
from pathlib import Path

from core.artifacts import StageDir, file_sha256
from core.config import UserError, cli
from core.data import fit_prompts, load_prompts
from core.generation import Decoding, chat
from core.model import context_length, load_causal_lm, to_inference_device
from core.tokenizer import load_tokenizer
from labeling_ui.config import LabelConfig
from labeling_ui.store import Store


def candidate_seed(base: int, prompt_id: str, j: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{base}:{prompt_id}:{j}".encode()).digest()[:4], "big")


def checkpoint_sha256(model_dir: Path) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise UserError(f"{model_dir}: no *.safetensors weights; run the stage that writes this model first")
    return hashlib.sha256("".join(file_sha256(w) for w in weights).encode()).hexdigest()


def _item_kind(prompt_id: str, rank_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"kind:{prompt_id}".encode()).digest()[:8], "big") / 2**64
    return "rank" if h < rank_fraction else "pair"


def main(cfg: LabelConfig, model: str, prompts: str, db: str, out: str, reward_model: str | None = None) -> dict:
    s = cfg.seed
    rows = load_prompts(prompts, cfg.prompt_source, "prompt_source")
    model_dir = Path(model)
    sha = checkpoint_sha256(model_dir)
    tok = load_tokenizer(model_dir)
    rows = fit_prompts(rows, tok, context_length(model_dir), s.max_new_tokens, cfg.prompt_source, prompts, "prompt_source")
    stage = StageDir(out)
    stage.start(cfg, inputs={"prompts": prompts}, stage_file=__file__)
    store = Store(db)
    round_no = store.start_round(str(model_dir), sha)
    rows = round_block(rows, round_no, s.prompts)
    policy = to_inference_device(load_causal_lm(model_dir))

    store.add_prompts(rows)  # one transaction, not one durable commit per prompt
    todo = [r for r in rows if store.has_candidates(r["id"], sha) < s.k]
    added, gen_s, gen_tokens = 0, 0.0, 0
    per_decoding = []
    for j in range(s.k):
        d = s.decodings[j % len(s.decodings)]
        decoding = Decoding(d.temperature, d.top_k, d.top_p, s.max_new_tokens)
        seeds = [candidate_seed(s.seed, r["id"], j) for r in todo]
        t0 = time.perf_counter()
        comps = chat(policy, tok, [r["messages"] for r in todo], decoding, batch_size=s.batch_size, row_seeds=seeds)
        gen_s += time.perf_counter() - t0
        gen_tokens += sum(len(c.token_ids) for c in comps)
        added += store.add_candidates([
            {"prompt_id": r["id"], "text": c.text, "checkpoint": str(model_dir), "checkpoint_sha": sha,
             "decoding": asdict(decoding), "seed": seed, "n_tokens": len(c.token_ids), "finished": c.finished,
             "logprob": round(sum(c.logprobs), 4)} for r, c, seed in zip(todo, comps, seeds)])
        if comps:
            per_decoding.append({"decoding": str(decoding), "mean_tokens": round(sum(len(c.token_ids) for c in comps) / len(comps), 1),
                                 "eos_rate": round(sum(c.finished for c in comps) / len(comps), 3)})

    new_items = 0
    for r in rows:
        ids = [c["id"] for c in store.candidates(r["id"], sha)][: s.k]
        if len(ids) < s.k:  # a crashed run left this prompt short; the rerun completes it first
            continue
        kind = _item_kind(r["id"], s.rank_fraction)
        if kind == "pair":
            ids = sorted(random.Random(f"pair:{s.seed}:{r['id']}").sample(ids, 2))
        new_items += store.add_item(r["id"], kind, ids, s.overlap)

    scored = 0
    if reward_model:
        scored = score_items(store, reward_model, sha, batch_size=s.batch_size)

    counts = store.counts()
    metrics = {"round": round_no, "checkpoint": str(model_dir), "checkpoint_sha256": sha, "prompts": len(rows),
               "prompts_generated": len(todo), "candidates_added": added, "items_added": new_items,
               "candidates_scored_by_reward_model": scored, "generation_s": round(gen_s, 2),
               "generated_tokens_per_s": round(gen_tokens / gen_s, 1) if gen_s else None,
               "per_decoding": per_decoding, "store": counts}
    stage.finish(metrics)
    print(f"round {round_no} ({model_dir}): seeded {len(todo)} prompts x {s.k} candidates ({added} new, {new_items} new items) "
          f"in {gen_s:.1f} s of generation; store: {counts['items']} items, {counts['judgments']} judgments")
    return metrics


def round_block(rows: list[dict], round_no: int, per_round: int) -> list[dict]:
    """The prompts of round `round_no`: the round's block of `per_round` rows, wrapping around (0 = all rows)."""
    if per_round <= 0 or per_round >= len(rows):
        return rows
    start = (round_no - 1) * per_round % len(rows)
    return (rows[start:] + rows[:start])[:per_round]


def score_items(store: Store, reward_model: str, checkpoint_sha: str, batch_size: int = 32) -> int:
    """Score this checkpoint's candidates with the reward model (the mean over its ensemble, when the
    reward stage trained one); items get their smallest margin, and with an ensemble its disagreement."""
    from core.reward import ensemble_members, load_reward_model, reward_scores

    prompts = store.prompts()
    cands = store.candidates(checkpoint_sha=checkpoint_sha)
    convs = [prompts[c["prompt_id"]]["messages"] + [{"role": "assistant", "content": c["text"]}] for c in cands]
    per_member = []
    for path in ensemble_members(reward_model):
        rm, rm_tok = load_reward_model(path)
        per_member.append({c["id"]: s for c, s in zip(cands, reward_scores(rm, rm_tok, convs, batch_size))})
    mean = {c["id"]: sum(m[c["id"]] for m in per_member) / len(per_member) for c in cands}
    store.set_rm_scores(mean, per_member)
    return len(cands)


if __name__ == "__main__":
    cli(main, LabelConfig, {"model": "policy checkpoint directory", "prompts": "prompt rows (jsonl)",
                            "db": "labeling store (SQLite file or postgresql:// URL)", "out": "stage output directory",
                            "reward_model": "reward model checkpoint (optional: item margins for active sampling)"},
        __doc__, optional=("reward_model",))
