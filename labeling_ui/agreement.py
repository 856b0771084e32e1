"""Inter-annotator agreement and the dashboard's figures, from raw judgments (pure).

Pairs: Cohen's kappa (scikit-learn) for every two annotators who judged at least `min_common` of
the same pair items, on the verdict in candidate terms (which candidate won, tie, both_bad; shown
positions differ per annotator, so "a" is not comparable), averaged weighted by items in common.
Rankings: Krippendorff's alpha (the `krippendorff` package), ordinal, over units (item, candidate)
with each annotator's rank as the value; it handles any number of annotators and missing values.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

import numpy as np


def verdict(judgment: dict) -> str:
    """A pair judgment in candidate terms: the winning candidate id, or tie / both_bad."""
    c = judgment["choice"]
    if c in ("a", "b"):
        return f"cand{judgment['shown_order'][0 if c == 'a' else 1]}"
    return c


def pair_kappa(judgments: list[dict], min_common: int = 5) -> dict:
    from sklearn.metrics import cohen_kappa_score

    by_annotator: dict[str, dict[int, str]] = defaultdict(dict)
    for j in judgments:
        if j["kind"] == "pair":
            by_annotator[j["annotator"]][j["item_id"]] = verdict(j)
    pairs = []
    for a, b in combinations(sorted(by_annotator), 2):
        common = sorted(set(by_annotator[a]) & set(by_annotator[b]))
        if len(common) < min_common:
            continue
        ya, yb = [by_annotator[a][i] for i in common], [by_annotator[b][i] for i in common]
        # kappa is undefined when both annotators used one and the same label for everything
        k = 1.0 if ya == yb and len(set(ya)) == 1 else float(cohen_kappa_score(ya, yb))
        pairs.append({"annotators": f"{a} / {b}", "items": len(common), "kappa": round(k, 3),
                      "raw_agreement": round(sum(x == y for x, y in zip(ya, yb)) / len(common), 3)})
    total = sum(p["items"] for p in pairs)
    mean = round(sum(p["kappa"] * p["items"] for p in pairs) / total, 3) if total else None
    return {"mean_kappa": mean, "pairs": pairs}


def rank_alpha(judgments: list[dict]) -> dict:
    import krippendorff

    ranks = [j for j in judgments if j["kind"] == "rank"]
    annotators = sorted({j["annotator"] for j in ranks})
    units = sorted({(j["item_id"], c) for j in ranks for c in j["shown_order"]})
    col = {u: i for i, u in enumerate(units)}
    row = {a: i for i, a in enumerate(annotators)}
    data = np.full((len(annotators), len(units)), np.nan)
    for j in ranks:
        for c, r in zip(j["shown_order"], j["ranks"]):
            data[row[j["annotator"]], col[(j["item_id"], c)]] = r
    multi = int((np.sum(~np.isnan(data), axis=0) >= 2).sum()) if units else 0
    if multi == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
        return {"alpha": None, "units_with_2plus": multi}
    alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")
    return {"alpha": round(float(alpha), 3), "units_with_2plus": multi}


def annotator_stats(judgments: list[dict]) -> list[dict]:
    """Per annotator: judgments, median seconds from assignment to submit, judgments per hour of active time."""
    by: dict[str, list[dict]] = defaultdict(list)
    for j in judgments:
        by[j["annotator"]].append(j)
    out = []
    for name, js in sorted(by.items()):
        secs = [j["submitted_at"] - j["assigned_at"] for j in js if j["assigned_at"] is not None]
        out.append({"annotator": name, "judgments": len(js),
                    "pairs": sum(j["kind"] == "pair" for j in js), "rankings": sum(j["kind"] == "rank" for j in js),
                    "corrections": sum(j["correction"] is not None for j in js),
                    "flags": sum(bool(j["flags"]) for j in js),
                    "median_s": round(statistics.median(secs), 1) if secs else None,
                    "per_hour": round(3600 / statistics.median(secs), 1) if secs and statistics.median(secs) > 0 else None})
    return out


def progress(items: list[dict]) -> list[dict]:
    out = []
    for kind in ("pair", "rank"):
        its = [i for i in items if i["kind"] == kind]
        out.append({"kind": kind, "items": len(its),
                    "complete": sum(i["n_judged"] >= i["max_judgments"] for i in its),
                    "started": sum(0 < i["n_judged"] < i["max_judgments"] for i in its),
                    "judgments": sum(i["n_judged"] for i in its),
                    "slots": sum(i["max_judgments"] for i in its)})
    return out


def flagged(judgments: list[dict]) -> list[dict]:
    return [{"item_id": j["item_id"], "prompt_id": j["prompt_id"], "annotator": j["annotator"],
             "flags": ", ".join(j["flags"])} for j in judgments if j["flags"]]
