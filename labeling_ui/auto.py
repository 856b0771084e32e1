"""Label-auto: the scripted annotator judges the seeded items, so `make all` needs no human.

Run:    make label-auto
        python -m labeling_ui.auto --config configs/tiny/label.yaml --db data/labels_tiny.db --out runs/tiny/label-auto
Reads:  the labeling store (items queued by `make seed`)
Writes: judgments into the store through the same calls the browser app makes (next_item, submit),
        one account per configured persona ("auto-<persona>-<n>"); <out>/config.yaml, metrics.json, DONE

Each scripted annotator (core.annotator: an explicit rubric, a persona, seeded noise) takes items
until none is left for it: a pair gets a, b, tie or both_bad; a ranking gets ranks 1..k. A response
with a rude phrase is flagged "unsafe". When no shown response is correct, it writes the prompt's
reference answer as a correction with probability auto.correction_rate.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter

from core.annotator import ScriptedAnnotator, rubric
from core.artifacts import StageDir
from core.config import cli
from labeling_ui.config import LabelConfig
from labeling_ui.store import Store


def judge(annotator: ScriptedAnnotator, shown, rng: random.Random, correction_rate: float) -> dict:
    """What one scripted annotator submits for one shown item (keyword arguments of Store.submit)."""
    prompt, texts = shown.prompt, shown.texts
    flags = ["unsafe"] if any(rubric(prompt, t)["polite"] == 0 for t in texts) else []
    all_wrong = not any(annotator.is_correct(prompt, t) for t in texts)
    correction = prompt.get("reference") if all_wrong and rng.random() < correction_rate else None
    if shown.kind == "pair":
        return {"choice": annotator.compare(prompt, texts[0], texts[1]), "flags": flags, "correction": correction}
    return {"ranks": annotator.rank(prompt, texts), "flags": flags, "correction": correction}


def main(cfg: LabelConfig, db: str, out: str) -> dict:
    stage = StageDir(out)
    stage.start(cfg, stage_file=__file__)
    store = Store(db, lease_s=cfg.app.lease_s)
    workers = []
    for n, a in enumerate(cfg.auto.annotators):
        name = f"auto-{a.persona}-{n + 1}"
        if store.annotator(name) is None:
            store.add_annotator(name, secrets.token_urlsafe(16))
        workers.append((name, ScriptedAnnotator(a.persona, a.noise, seed=cfg.auto.seed + n),
                        random.Random(f"{cfg.auto.seed}:{name}")))
    done: Counter = Counter()
    open_kinds = {(name, kind) for name, _, _ in workers for kind in ("pair", "rank")}
    while open_kinds:  # round-robin, as a team of annotators would interleave
        for name, annotator, rng in workers:
            for kind in ("pair", "rank"):
                if (name, kind) not in open_kinds:
                    continue
                shown = store.next_item(name, kind, active=cfg.app.active_sampling)
                if shown is None:
                    open_kinds.discard((name, kind))
                    continue
                store.submit(name, shown.item_id, **judge(annotator, shown, rng, cfg.auto.correction_rate))
                done[name] += 1
    judgments = store.judgments()
    metrics = {"judgments_added": sum(done.values()), "by_annotator": dict(sorted(done.items())),
               "store": store.counts(),
               "choices": dict(Counter(j["choice"] for j in judgments if j["choice"])),
               "corrections": sum(j["correction"] is not None for j in judgments),
               "flagged": sum(bool(j["flags"]) for j in judgments)}
    stage.finish(metrics)
    print(f"scripted annotators added {metrics['judgments_added']} judgments; store has {metrics['store']['judgments']}")
    return metrics


if __name__ == "__main__":
    cli(main, LabelConfig, {"db": "labeling store (SQLite file or postgresql:// URL)", "out": "stage output directory"}, __doc__)
