"""Benchmark: is the alignment gain learned from the labels, and does it hold over seeds?

Run:    make bench-control   (after make align; SHUFFLES='0 1 2 both', the default: three shuffles and the
                              pairs both ways, a run each)
        make bench-seeds     (SEEDS='1 2': reward model, DPO and PPO again with other seeds, same labels)
        python -m bench.control shuffle --train runs/tiny/prefs/train.jsonl --out runs/tiny/control/0/prefs/train.jsonl
        python -m bench.control shuffle --seed both --train ... --out runs/tiny/control/both/prefs/train.jsonl
        python -m bench.control table --runs runs/tiny --control runs/tiny/control

`shuffle` swaps chosen and rejected in a random half of the training pairs (seeded; each row keeps
the flag `label_swapped`), so the pairs keep every property but their direction: the same prompts,
the same answers, the same lengths and formats. `make bench-control` then trains the reward model,
DPO and PPO on them with the stages' own configs into <runs>/control/<shuffle>/, once per shuffle, and
`table` prints them next to the real run, with the shuffles' mean and range. The reward model is scored
on the real held-out labels; the policies by the scripted annotator against SFT, as the stages report
it. A gain that survives here comes from format or length, not from the annotators' judgments; the real
one minus this is what the labels taught. A random swap leaves a little direction by chance (a style
that ends up on the chosen side a few dozen times more often than on the rejected), and PPO amplifies
whatever its reward model takes from it: one shuffle's figure is a draw, several give its spread.
`--seed both` writes every pair once each way instead: no direction at all, not even by chance, so
nothing is left for PPO to amplify; what that run gains is the pipeline's alone (format, the KL term).
`seeds` prints the chain's own run (seed 0) next to the runs under <runs>/seeds/<seed>/: the spread
a single figure hides, and the worst seed.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from core.artifacts import BOTH_WAYS, both_ways_run, control_runs, write_jsonl
from core.data import load_rows
from core.judges import NO_LENGTH_CONTROL, describe_change


def _empty(side: list[dict]) -> bool:
    return not side[-1]["content"].strip()


def _kept(rows: list[dict]) -> list[dict]:
    """Pairs with an empty answer are left out (the stages refuse an empty chosen answer), swapped or not."""
    return [r for r in rows if not (_empty(r["chosen"]) or _empty(r["rejected"]))]


def _swapped(r: dict) -> dict:
    row = {**r, "chosen": r["rejected"], "rejected": r["chosen"], "label_swapped": True}
    if row.get("rubric_agrees") is not None:
        row["rubric_agrees"] = 1.0 - row["rubric_agrees"]
    return row


def shuffle_labels(rows: list[dict], seed: int) -> list[dict]:
    """Each row with chosen and rejected swapped with probability 1/2 (seeded), flagged `label_swapped`."""
    rng = random.Random(f"control-{seed}")
    return [_swapped(r) if rng.random() < 0.5 else {**r, "label_swapped": False} for r in _kept(rows)]


def both_ways(rows: list[dict]) -> list[dict]:
    """Each row as it is and again with chosen and rejected swapped (flagged `label_swapped`): the training pairs
    with no direction left."""
    return [row for r in _kept(rows) for row in ({**r, "label_swapped": False}, _swapped(r))]


def _metrics(stage: Path) -> dict | None:
    f = stage / "metrics.json"
    return json.loads(f.read_text()) if (stage / "DONE").exists() and f.exists() else None


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def _rm(m: dict | None) -> str:
    if m is None:
        return ""
    mean = (m.get("ensemble") or {}).get("mean_score_accuracy")  # what PPO and RLOO reward with
    ceiling = m.get("label_ceiling")
    return (_pct(m["test"]["accuracy"]) + (f" (ceiling {_pct(ceiling)})" if ceiling is not None else "")
            + (f"; the ensemble's mean {_pct(mean)}" if mean is not None else ""))


def _implicit(m: dict | None) -> str:
    r = (m or {}).get("implicit_reward_test")
    return "" if r is None else _pct(r["accuracy"]) + "".join(f", {k} {_pct(v['accuracy'])}"
                                                         for k, v in r.get("by_kind", {}).items())


def _spread(values: list) -> list[str]:
    """The shuffles' mean (range) as one more cell, when there are several shuffles."""
    xs = [x for x in values if x is not None]
    return [f"{_pct(sum(xs) / len(xs))} ({_pct(min(xs))}-{_pct(max(xs))})" if xs else ""] if len(values) > 1 else []


def table(runs: Path, control: Path) -> list[list[str]]:
    """A header and one row per stage and measure: the real run, then each shuffle (and their mean and range), then
    the run on the pairs both ways."""
    shuffles, both = control_runs(control), both_ways_run(control)
    rows = [["stage", "measure", "real labels"] + [f"shuffled labels, shuffle {n}" for n, _ in shuffles]
            + (["shuffles: mean (range)"] if len(shuffles) > 1 else []) + (["every pair both ways"] if both else [])]
    for name, stage in (("reward model", "reward"), ("DPO", "dpo"), ("PPO", "ppo"), ("RLOO", "rloo")):
        real, ctrl = _metrics(runs / stage), [_metrics(d / stage) for _, d in shuffles]
        tail = [_metrics(both / stage)] if both else []
        if real is None and all(c is None for c in ctrl + tail):
            continue
        if stage == "reward":
            rows.append([name, "held-out pair accuracy", _rm(real)] + [_rm(c) for c in ctrl]
                        + _spread([c and c["test"]["accuracy"] for c in ctrl]) + [_rm(c) for c in tail])
            continue
        if any(map(_implicit, [real, *ctrl, *tail])):  # on the real held-out labels, whatever the stage trained on
            rows.append([name, "implicit reward, held-out pair accuracy", _implicit(real)] + [_implicit(c) for c in ctrl]
                        + _spread([((c or {}).get("implicit_reward_test") or {}).get("accuracy") for c in ctrl])
                        + [_implicit(c) for c in tail])
        decodings = next(m for m in [real, *ctrl, *tail] if m)["vs_sft"]
        for key in (k for k in decodings if k != "kl"):
            rows.append([name, f"win rate vs SFT, {key}", _win(real, key)] + [_win(c, key, short=True) for c in ctrl]
                        + _spread([c and c["vs_sft"][key]["win_rate"] for c in ctrl])
                        + [_win(c, key, short=True) for c in tail])
    return rows


def _win(m: dict | None, key: str, short: bool = False) -> str:
    """The win rate against SFT with its CI, length-controlled twin and correctness; `short`: the figures only
    (a shuffle's column: SFT's correctness and the paired test are in the real run's)."""
    if m is None:
        return "not run"
    r = m["vs_sft"][key]
    ci = f"{_pct(r['ci95'][0])}-{_pct(r['ci95'][1])}" if not short else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"
    lc = ""
    if "length_controlled_win_rate" in r:  # None where the lengths barely overlap
        lc = (f", {'LC' if short else 'length-controlled'} "
              f"{_pct(r['length_controlled_win_rate']) or ('n/a' if short else NO_LENGTH_CONTROL)}")
    if short:
        return f"{_pct(r['win_rate'])} ({ci}){lc}, correct {_pct(r['correct_a'])}"
    return (f"{_pct(r['win_rate'])} ({ci}){lc}, "
            f"correct {_pct(r['correct_a'])} vs {_pct(r['correct_b'])}{describe_change(r)}")


def seeds_table(runs: Path, seeds_dir: Path) -> list[list[str]]:
    """One row per stage and measure, one column per seed (seed 0 = the chain's own run under <runs>)."""
    dirs = [("0", runs)] + sorted(((d.name, d) for d in seeds_dir.iterdir() if d.is_dir()), key=lambda x: int(x[0]))
    rows = []
    rows.append(["reward model", "held-out pair accuracy"] + [_rm(_metrics(d / "reward")) for _, d in dirs])
    for name, stage in (("DPO", "dpo"), ("PPO", "ppo"), ("RLOO", "rloo")):
        ms = [_metrics(d / stage) for _, d in dirs]
        if all(m is None for m in ms):
            continue
        if any(_implicit(m) for m in ms):
            rows.append([name, "implicit reward, held-out pair accuracy"] + [_implicit(m) for m in ms])
        for key in (k for k in next(m for m in ms if m)["vs_sft"] if k != "kl"):
            rows.append([name, f"win rate vs SFT, {key}"] + [_win(m, key) for m in ms])
        rows.append([name, "KL to SFT (nats/answer)"] +
                    ["" if m is None else f"{m['vs_sft']['kl']['kl_per_sequence']:.2f}" for m in ms])
    return [["stage", "measure"] + [f"seed {n}" for n, _ in dirs]] + rows


def _print(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in [rows[0], ["-" * w for w in widths]] + rows[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shuffle")
    s.add_argument("--train", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", default="0", help=f"a number: a random half swapped, seeded; '{BOTH_WAYS}': every pair "
                   "once each way")
    t = sub.add_parser("table")
    t.add_argument("--runs", required=True)
    t.add_argument("--control", required=True)
    t = sub.add_parser("seeds")
    t.add_argument("--runs", required=True)
    t.add_argument("--seeds-dir", required=True)
    a = ap.parse_args()
    if a.cmd == "shuffle":
        if a.seed != BOTH_WAYS and not a.seed.isdigit():
            raise SystemExit(f"error: --seed {a.seed}: give a number (a random swap) or '{BOTH_WAYS}' (every pair both ways)")
        pairs = load_rows(a.train)
        rows = both_ways(pairs) if a.seed == BOTH_WAYS else shuffle_labels(pairs, int(a.seed))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(Path(a.out), rows)
        print(f"{a.out}: {len(rows)} pairs, {sum(r['label_swapped'] for r in rows)} swapped (seed {a.seed}); "
              f"{len(pairs) - len(_kept(pairs))} with an empty answer left out")
        return
    if a.cmd == "seeds":
        _print(seeds_table(Path(a.runs), Path(a.seeds_dir)))
        return
    if not control_runs(a.control) and not both_ways_run(a.control):
        raise SystemExit(f"error: {a.control}: no control run (folders 0, 1, ..., {BOTH_WAYS}): run make bench-control")
    _print(table(Path(a.runs), Path(a.control)))


if __name__ == "__main__":
    main()
