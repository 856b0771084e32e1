"""Label-auto: the scripted annotator judges the seeded items, so `make all` needs no human.

Run:    make label-auto
        python -m labeling_ui.auto --config configs/tiny/label.yaml --db data/labels_tiny.db --out runs/tiny/label-auto
Reads:  the labeling store (items queued by `make seed`)
Writes: judgments into the store through the same calls the browser app makes (next_item, submit),
        one account per configured persona ("auto-<persona>-<n>"); <out>/config.yaml, metrics.json, DONE

Each scripted annotator (core.annotator: an explicit rubric, a persona, seeded noise) takes items
until none is left for it: a pair gets a, b, tie or both_bad; a ranking gets ranks 1..k, and the
responses scoring under half right are marked as failing the task (no vote between two of them). A response
with a rude phrase is flagged "unsafe". When no shown response is correct, it writes the prompt's
reference answer as a correction with probability auto.correction_rate.

With auto.judge.kind reward_model or llm (prompts that are not the world's), one annotator
"auto-<kind>" labels every item with that judge (core.judges): a pair gets a, b or tie, a ranking the
ranks of its pairwise verdicts; it flags and corrects nothing (it has no rubric and no reference).
"""

from __future__ import annotations

import random
import secrets
from collections import Counter

from core.annotator import ScriptedAnnotator, rubric
from core.artifacts import StageDir
from core.config import cli
from core.judges import choice, make_judge, rank, require_world_prompt
from labeling_ui.config import LabelConfig
from labeling_ui.store import Store


def team(cfg: LabelConfig, store: Store) -> list[tuple[str, object]]:
    """(account, who judges) for each automatic annotator, accounts created: the scripted personas
    (ScriptedAnnotator), or one reward-model / LLM judge (core.judges) as "auto-<kind>". Also the arena's voters."""
    if cfg.auto.judge.kind == "scripted":
        out = [(f"auto-{a.persona}-{n + 1}", ScriptedAnnotator(a.persona, a.noise, seed=cfg.auto.seed + n))
               for n, a in enumerate(cfg.auto.annotators)]
    else:
        out = [(f"auto-{cfg.auto.judge.kind}", make_judge(cfg.auto.judge, []))]
    for name, _ in out:
        if store.annotator(name) is None:
            store.add_annotator(name, secrets.token_urlsafe(16))
    return out


def _world_only(prompt: dict) -> None:
    require_world_prompt(prompt, "auto.judge.kind scripted", "set auto.judge.kind reward_model or llm (and auto.judge.path)")


def verdict(who, prompt: dict, a: str, b: str) -> str:
    """One automatic annotator's pairwise verdict: "a", "b", "tie" (or, scripted, "both_bad")."""
    if isinstance(who, ScriptedAnnotator):
        _world_only(prompt)
        return who.compare(prompt, a, b)
    return choice(who.compare([prompt], [a], [b])[0])


def judge(annotator: ScriptedAnnotator, shown, rng: random.Random, correction_rate: float) -> dict:
    """What one scripted annotator submits for one shown item (keyword arguments of Store.submit)."""
    prompt, texts = shown.prompt, shown.texts
    _world_only(prompt)
    flags = ["unsafe"] if any(rubric(prompt, t)["polite"] == 0 for t in texts) else []
    all_wrong = not any(annotator.is_correct(prompt, t) for t in texts)
    correction = prompt.get("reference") if all_wrong and rng.random() < correction_rate else None
    if shown.kind == "pair":
        return {"choice": annotator.compare(prompt, texts[0], texts[1]), "flags": flags, "correction": correction}
    return {"ranks": annotator.rank(prompt, texts), "bad": [annotator.fails(prompt, t) for t in texts],
            "flags": flags, "correction": correction}


def model_judge(judge, shown) -> dict:
    """What a reward-model or LLM judge submits for one shown item."""
    if shown.kind == "pair":
        return {"choice": verdict(judge, shown.prompt, shown.texts[0], shown.texts[1])}
    return {"ranks": rank(judge, shown.prompt, shown.texts)}


def main(cfg: LabelConfig, db: str, out: str) -> dict:
    stage = StageDir(out)
    stage.start(cfg, stage_file=__file__)
    store = Store(db, lease_s=cfg.app.lease_s, busy_timeout_s=cfg.app.busy_timeout_s)
    members = team(cfg, store)
    rngs = {name: random.Random(f"{cfg.auto.seed}:{name}") for name, _ in members}
    done: Counter = Counter()
    open_kinds = {(name, kind) for name, _ in members for kind in ("pair", "rank")}
    while open_kinds:  # round-robin, as a team of annotators would interleave
        for name, who in members:
            for kind in ("pair", "rank"):
                if (name, kind) not in open_kinds:
                    continue
                shown = store.next_item(name, kind, active=cfg.app.active_sampling)
                if shown is None:
                    open_kinds.discard((name, kind))
                    continue
                store.submit(name, shown.item_id, **(judge(who, shown, rngs[name], cfg.auto.correction_rate)
                                                     if isinstance(who, ScriptedAnnotator) else model_judge(who, shown)))
                done[name] += 1
    judgments = store.judgments()
    metrics = {"judgments_added": sum(done.values()), "by_annotator": dict(sorted(done.items())),
               "store": store.counts(),
               "choices": dict(Counter(j["choice"] for j in judgments if j["choice"])),
               "corrections": sum(j["correction"] is not None for j in judgments),
               "flagged": sum(bool(j["flags"]) for j in judgments)}
    stage.finish(metrics)
    print(f"{', '.join(name for name, _ in members)} added {metrics['judgments_added']} judgments; "
          f"store has {metrics['store']['judgments']}")
    return metrics


if __name__ == "__main__":
    cli(main, LabelConfig, {"db": "labeling store (SQLite file or postgresql:// URL)", "out": "stage output directory"}, __doc__)
