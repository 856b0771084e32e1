"""World: write the default world's data files (corpus, prompts, SFT demonstrations), generated locally.

Run:    make world
        python -m pretrain.world --config configs/tiny/world.yaml --out runs/tiny/world [corpus_chars=200000 ...]
Reads:  nothing (a seeded generator, `core.world`)
Writes: <out>/corpus.jsonl, corpus_heldout.jsonl   {"text": ...}
        <out>/prompts_train.jsonl, prompts_heldout.jsonl   {"id", "messages", "task", "reference" (the best
            answer), "answer" (the bare answer), ...fields the annotator checks}
        <out>/sft.jsonl   {"messages": [user, assistant], "prompt_id", "task", "flaw", "closing"}
        config.yaml, metrics.json (counts per task and flaw), DONE (last)
"""

from __future__ import annotations

from collections import Counter

from tqdm import tqdm

from core.artifacts import StageDir, write_jsonl
from core.config import UserError, cli
from core.world import WorldConfig, corpus, demonstrations, prompts


def main(cfg: WorldConfig, out: str) -> dict:
    if not 0.0 <= cfg.flawed_fraction <= 1.0 or not 0.0 < cfg.heldout_fraction < 1.0:
        raise UserError("flawed_fraction must be in [0, 1] and heldout_fraction in (0, 1)")
    if min(cfg.closing_weights()) < 0.0:
        raise UserError(f"chatter_fraction ({cfg.chatter_fraction}) and sign_off_fraction ({cfg.sign_off_fraction}) "
                        "must be >= 0 and sum to at most 1")
    stage = StageDir(out)
    stage.start(cfg)
    docs = list(tqdm(corpus(cfg), desc="corpus", unit="doc", mininterval=1))
    heldout_docs = list(corpus(cfg, heldout=True))
    train, heldout = prompts(cfg)
    demos = demonstrations(cfg, train)
    write_jsonl(stage.root / "corpus.jsonl", ({"text": d} for d in docs))
    write_jsonl(stage.root / "corpus_heldout.jsonl", ({"text": d} for d in heldout_docs))
    write_jsonl(stage.root / "prompts_train.jsonl", train)
    write_jsonl(stage.root / "prompts_heldout.jsonl", heldout)
    write_jsonl(stage.root / "sft.jsonl", demos)
    metrics = {
        "corpus_docs": len(docs), "corpus_chars": sum(map(len, docs)), "heldout_corpus_docs": len(heldout_docs),
        "prompts_train": len(train), "prompts_heldout": len(heldout),
        "prompts_heldout_by_task": dict(sorted(Counter(p["task"] for p in heldout).items())),
        "sft_rows": len(demos),
        "sft_flaws": dict(sorted(Counter(d["flaw"] or "none" for d in demos).items())),
        "sft_closings": dict(sorted(Counter(d["closing"] for d in demos if d["closing"]).items())),
    }
    stage.finish(metrics)
    return metrics


if __name__ == "__main__":
    cli(main, WorldConfig, {"out": "stage output directory"}, __doc__)
