"""Export: turn the store's raw judgments into preference pairs (reward model, DPO) and corrections (SFT).

Run:    make export
        python -m labeling_ui.export --config configs/tiny/label.yaml --db data/labels_tiny.db --out runs/tiny/prefs
Reads:  the labeling store
Writes: <out>/train.jsonl, test.jsonl   TRL's conversational preference rows:
            {"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg],
             "prompt_id", "task", "votes_for", "votes_against", "agreement", "annotators", "item_ids",
             "round": the labeling round (= the generating checkpoint) the pair comes from,
             "rubric_agrees": 1 / 0.5 / 0, whether the scripted annotators' rubric without noise prefers the
                 chosen side (world prompts only; the reward stage's label ceiling),
             "kind": "capability" (the answers do the task to different degrees) or "preference" (equally
                 correct, different style): what the pair asks a judge to tell apart (world prompts only),
             "style_against": for a capability pair, whether the more correct reply has the worse style (the
                 rubric without noise): a judge that reads style but cannot check the task ranks it backwards,
             "chosen_source"/"rejected_source": {candidate_id, checkpoint, checkpoint_sha256, decoding, seed}}
        <out>/corrections.jsonl   SFT rows {"messages": [user, assistant = the annotator's rewrite], provenance}
        <out>/config.yaml, metrics.json (counts, agreement), DONE (last)

How judgments become pairs (rankings -> pairs, ties, both-bad, majority across annotators) is
documented in labeling_ui/pairs.py. The split is by prompt id, so it is identical in every export.
The store is only read: raw judgments are kept and pairs are derived again at each export, from every
round's labels.
"""

from __future__ import annotations

import hashlib

from collections import Counter

from core.annotator import pair_kind, rubric_agreement, style_against
from core.artifacts import StageDir, write_jsonl
from core.config import UserError, cli
from labeling_ui.agreement import pair_kappa, rank_alpha
from labeling_ui.config import LabelConfig
from labeling_ui.pairs import aggregate, is_test
from labeling_ui.store import Store


def _source(c: dict) -> dict:
    return {"candidate_id": c["id"], "checkpoint": c["checkpoint"], "checkpoint_sha256": c["checkpoint_sha"],
            "decoding": c["decoding"], "seed": c["seed"]}


def preference_rows(store: Store, min_agreement: float, personas: list[str]) -> list[dict]:
    prompts = store.prompts()
    cands = {c["id"]: c for c in store.candidates()}
    rounds = store.rounds()
    rows = []
    for p in aggregate(store.judgments(), min_agreement):
        prompt, chosen, rejected = prompts[p["prompt_id"]], cands[p["chosen"]], cands[p["rejected"]]
        rows.append({"prompt": prompt["messages"],
                     "chosen": [{"role": "assistant", "content": chosen["text"]}],
                     "rejected": [{"role": "assistant", "content": rejected["text"]}],
                     "prompt_id": p["prompt_id"], "task": prompt.get("task"),
                     "votes_for": p["votes_for"], "votes_against": p["votes_against"], "agreement": p["agreement"],
                     "annotators": p["annotators"], "item_ids": p["item_ids"],
                     "round": rounds.get(chosen["checkpoint_sha"], {}).get("number"),
                     "rubric_agrees": rubric_agreement(prompt, chosen["text"], rejected["text"], personas),
                     "kind": pair_kind(prompt, chosen["text"], rejected["text"]),
                     "style_against": style_against(prompt, chosen["text"], rejected["text"], personas),
                     "chosen_source": _source(chosen), "rejected_source": _source(rejected)})
    return rows


def correction_rows(store: Store) -> list[dict]:
    prompts = store.prompts()
    return [{"messages": prompts[j["prompt_id"]]["messages"] + [{"role": "assistant", "content": j["correction"]}],
             "prompt_id": j["prompt_id"], "item_id": j["item_id"], "annotator": j["annotator"],
             "submitted_at": j["submitted_at"]}
            for j in store.judgments() if j["correction"]]


def main(cfg: LabelConfig, db: str, out: str, by: str = "cli") -> dict:
    store = Store(db)
    judgments = store.judgments()
    if not judgments:
        raise UserError(f"{db}: no judgments yet; label some items (make label, or make label-auto) before exporting")
    stage = StageDir(out)
    stage.start(cfg, stage_file=__file__)
    rows = preference_rows(store, cfg.export.min_agreement, sorted({a.persona for a in cfg.auto.annotators}))
    test = [r for r in rows if is_test(r["prompt_id"], cfg.export.test_fraction)]
    train = [r for r in rows if not is_test(r["prompt_id"], cfg.export.test_fraction)]
    corrections = correction_rows(store)
    write_jsonl(stage.root / "train.jsonl", train)
    write_jsonl(stage.root / "test.jsonl", test)
    write_jsonl(stage.root / "corrections.jsonl", corrections)
    metrics = {"judgments": len(judgments), "pairs_train": len(train), "pairs_test": len(test),
               "corrections": len(corrections),
               "unanimous_share": round(sum(r["agreement"] == 1.0 for r in rows) / len(rows), 3) if rows else None,
               "pairs_by_task": dict(sorted(Counter(r["task"] for r in rows).items())),
               "pairs_by_round": {str(k): v for k, v in sorted(Counter(r["round"] or 0 for r in rows).items())},
               "rounds": [{"round": v["number"], "checkpoint": v["checkpoint"], "checkpoint_sha256": sha}
                          for sha, v in store.rounds().items()],
               "pair_kappa": pair_kappa(judgments)["mean_kappa"], "rank_alpha": rank_alpha(judgments)["alpha"]}
    digest = hashlib.sha256((stage.root / "train.jsonl").read_bytes()).hexdigest()
    store.record(by, "export", str(stage.root / "train.jsonl"), sha256=digest, pairs_train=len(train),
                 pairs_test=len(test), corrections=len(corrections))
    stage.finish(metrics)
    print(f"exported {len(train)} train + {len(test)} test pairs and {len(corrections)} corrections to {stage.root}")
    return metrics


if __name__ == "__main__":
    cli(main, LabelConfig, {"db": "labeling store (SQLite file or postgresql:// URL)", "out": "stage output directory"}, __doc__)
