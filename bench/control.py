"""Benchmark: is the alignment gain learned from the labels? The same pipeline on shuffled labels.

Run:    make bench-control   (after make align; SEED=1 for another shuffle)
        python -m bench.control shuffle --train runs/tiny/prefs/train.jsonl --out runs/tiny/control/prefs/train.jsonl
        python -m bench.control table --runs runs/tiny --control runs/tiny/control

`shuffle` swaps chosen and rejected in a random half of the training pairs (seeded; each row keeps
the flag `label_swapped`), so the pairs keep every property but their direction: the same prompts,
the same answers, the same lengths and formats. `make bench-control` then trains the reward model,
DPO and PPO on them with the stages' own configs into <runs>/control/, and `table` prints them next
to the real run. The reward model is scored on the real held-out labels; the policies by the
scripted annotator against SFT, as the stages report it. A gain that survives here comes from format
or length, not from the annotators' judgments; the real one minus this is what the labels taught.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from core.artifacts import write_jsonl
from core.data import load_rows


def shuffle_labels(rows: list[dict], seed: int) -> list[dict]:
    """Each row with chosen and rejected swapped with probability 1/2 (seeded), flagged `label_swapped`."""
    rng = random.Random(f"control-{seed}")
    out = []
    for r in rows:
        swap = rng.random() < 0.5
        row = {**r, "chosen": r["rejected"], "rejected": r["chosen"]} if swap else dict(r)
        if swap and row.get("rubric_agrees") is not None:
            row["rubric_agrees"] = 1.0 - row["rubric_agrees"]
        out.append({**row, "label_swapped": swap})
    return out


def _metrics(stage: Path) -> dict | None:
    f = stage / "metrics.json"
    return json.loads(f.read_text()) if (stage / "DONE").exists() and f.exists() else None


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def table(runs: Path, control: Path) -> list[list[str]]:
    rows = []
    for name, stage in (("reward model", "reward"), ("DPO", "dpo"), ("PPO", "ppo"), ("RLOO", "rloo")):
        real, ctrl = _metrics(runs / stage), _metrics(control / stage)
        if real is None and ctrl is None:
            continue
        if stage == "reward":
            cell = lambda m: "" if m is None else f"{_pct(m['test']['accuracy'])} (ceiling {_pct(m.get('label_ceiling'))})"  # noqa: E731
            rows.append([name, "held-out pair accuracy", cell(real), cell(ctrl)])
            continue
        decodings = (real or ctrl)["vs_sft"]
        for key in (k for k in decodings if k != "kl"):
            def cell(m, key=key):
                if m is None:
                    return "not run"
                r = m["vs_sft"][key]
                return (f"{_pct(r['win_rate'])} ({_pct(r['ci95'][0])}-{_pct(r['ci95'][1])}), correct "
                        f"{_pct(r['correct_a'])} vs {_pct(r['correct_b'])}")
            rows.append([name, f"win rate vs SFT, {key}", cell(real), cell(ctrl)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shuffle")
    s.add_argument("--train", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("table")
    t.add_argument("--runs", required=True)
    t.add_argument("--control", required=True)
    a = ap.parse_args()
    if a.cmd == "shuffle":
        rows = shuffle_labels(load_rows(a.train), a.seed)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(Path(a.out), rows)
        print(f"{a.out}: {len(rows)} pairs, {sum(r['label_swapped'] for r in rows)} swapped (seed {a.seed})")
        return
    rows = table(Path(a.runs), Path(a.control))
    head = ["stage", "measure", "real labels", "shuffled labels (control)"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
