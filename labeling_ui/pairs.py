"""From raw judgments to preference pairs (pure; export.py writes what this returns).

Each judgment becomes votes "candidate x is better than candidate y":
  pair, choice a / b     one vote for the chosen response over the other (a = the one shown first)
  pair, tie              no vote: a tie says nothing about which to prefer
  pair, both_bad         no vote: neither response is a good "chosen"; the annotator's correction,
                         if written, goes to corrections.jsonl (SFT data) instead
  rank of k              one vote for every pair whose ranks differ (k=4 -> up to 6 votes); equal
                         ranks are ties and give no vote, and neither do two responses both marked as
                         failing the task (as both_bad for a pair: which of two wrong answers is less
                         bad is not what the policy should learn)
  flagged unsafe         the flagged judgment's votes still count (a flag is not a preference)
Across annotators, votes for the same two candidates are aggregated by majority: the pair is kept
when one side has more votes, `agreement` = winning votes / all votes on that pair (1.0 = unanimous),
and `min_agreement` drops contested pairs. Split: by prompt id hash, so all pairs of one prompt
land on the same side and the split never changes as more labels arrive.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from itertools import combinations


def votes(judgment: dict) -> list[tuple[int, int]]:
    """(winner candidate id, loser candidate id) for one raw judgment."""
    order = judgment["shown_order"]
    if judgment["choice"] is not None:
        if judgment["choice"] == "a":
            return [(order[0], order[1])]
        if judgment["choice"] == "b":
            return [(order[1], order[0])]
        return []
    ranks, bad = judgment["ranks"], judgment.get("bad") or [False] * len(order)
    out = []
    for i, j in combinations(range(len(order)), 2):
        if bad[i] and bad[j]:
            continue
        if ranks[i] < ranks[j]:
            out.append((order[i], order[j]))
        elif ranks[j] < ranks[i]:
            out.append((order[j], order[i]))
    return out


def aggregate(judgments: list[dict], min_agreement: float = 0.5) -> list[dict]:
    """Majority-aggregated pairs: {chosen, rejected, prompt_id, votes_for, votes_against, agreement, annotators}."""
    tally: dict[tuple[str, int, int], dict] = defaultdict(lambda: {"for": [], "against": [], "items": set()})
    for j in judgments:
        for win, lose in votes(j):
            lo, hi = min(win, lose), max(win, lose)
            t = tally[(j["prompt_id"], lo, hi)]
            t["for" if win == lo else "against"].append(j["annotator"])
            t["items"].add(j["item_id"])
    pairs = []
    for (prompt_id, lo, hi), t in sorted(tally.items()):
        n_lo, n_hi = len(t["for"]), len(t["against"])
        if n_lo == n_hi:
            continue
        chosen, rejected, win_names = (lo, hi, t["for"]) if n_lo > n_hi else (hi, lo, t["against"])
        agreement = max(n_lo, n_hi) / (n_lo + n_hi)
        if agreement < min_agreement:
            continue
        pairs.append({"prompt_id": prompt_id, "chosen": chosen, "rejected": rejected,
                      "votes_for": max(n_lo, n_hi), "votes_against": min(n_lo, n_hi),
                      "agreement": round(agreement, 4), "annotators": sorted(set(t["for"] + t["against"])),
                      "agreed_by": sorted(set(win_names)), "item_ids": sorted(t["items"])})
    return pairs


def is_test(prompt_id: str, test_fraction: float) -> bool:
    """Deterministic split by prompt: the same prompt always lands on the same side, in every process."""
    h = int.from_bytes(hashlib.sha256(f"split:{prompt_id}".encode()).digest()[:8], "big")
    return h / 2**64 < test_fraction
