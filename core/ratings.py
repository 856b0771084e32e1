"""Bradley-Terry ratings from pairwise votes (the arena), with bootstrap intervals and a win matrix.

Model: P(i beats j) = s_i / (s_i + s_j). A tie counts as half a win for each side; "both bad"
votes carry no preference and are left out. Strengths are fitted by maximum likelihood with the
minorise-maximise iteration s_i <- W_i / sum_j n_ij / (s_i + s_j), after one virtual tie between
every pair of models (a weak prior that keeps a model with no wins finite). Ratings are on the
Elo scale, 400 log10(s), shifted so the anchor model (e.g. SFT) sits at 1000: a 100-point gap
means the higher one wins 64 % of the time.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}    # the left/first model's share of a vote


def win_totals(votes: list[tuple[str, str, str]], models: list[str]) -> tuple[dict, dict]:
    """wins[i][j]: i's (fractional) wins over j; games[i][j]: votes between i and j. Votes are
    (model_a, model_b, choice) with choice in a | b | tie | both_bad."""
    wins = {i: {j: 0.0 for j in models} for i in models}
    games = {i: {j: 0 for j in models} for i in models}
    for a, b, choice in votes:
        if choice not in SCORE or a == b:
            continue
        wins[a][b] += SCORE[choice]
        wins[b][a] += 1.0 - SCORE[choice]
        games[a][b] += 1
        games[b][a] += 1
    return wins, games


def bradley_terry(votes: list[tuple[str, str, str]], models: list[str], prior: float = 0.5,
                  iters: int = 1000, tol: float = 1e-10) -> dict[str, float]:
    """Maximum-likelihood strengths (geometric mean 1) for the models."""
    wins, games = win_totals(votes, models)
    for i, j in combinations(models, 2):           # one virtual tie per pair
        for x, y in ((i, j), (j, i)):
            wins[x][y] += prior
            games[x][y] += 2 * prior
    s = {m: 1.0 for m in models}
    for _ in range(iters):
        new = {}
        for i in models:
            w = sum(wins[i].values())
            denom = sum(games[i][j] / (s[i] + s[j]) for j in models if j != i and games[i][j])
            new[i] = w / denom if denom else s[i]
        g = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {m: v / g for m, v in new.items()}
        done = max(abs(math.log(new[m] / s[m])) for m in models) < tol
        s = new
        if done:
            break
    return s


def elo(strengths: dict[str, float], anchor: str | None = None) -> dict[str, float]:
    shift = 1000 - (400 * math.log10(strengths[anchor]) if anchor in strengths else 0.0)
    return {m: 400 * math.log10(v) + shift for m, v in strengths.items()}


def ratings(votes: list[tuple[str, str, str]], models: list[str], anchor: str | None = None,
            n_boot: int = 500, seed: int = 0, groups: list[str] | None = None) -> dict:
    """Elo-scale ratings with 95 % bootstrap intervals and the empirical win matrix. With `groups` (one
    label per vote, e.g. its prompt) whole groups are resampled: votes on the same prompt are not
    independent (several annotators, one pair of answers), and resampling them one by one would
    make the interval too narrow."""
    # In a canonical order, so the same votes give the same intervals whatever order the store returns them in.
    order = sorted(range(len(votes)), key=lambda i: (groups[i] if groups else "", votes[i]))
    votes, groups = [votes[i] for i in order], [groups[i] for i in order] if groups else None
    point = elo(bradley_terry(votes, models), anchor)
    rng = random.Random(seed)
    clusters: dict[str, list] = {}
    for i, v in enumerate(votes):
        clusters.setdefault(groups[i] if groups else str(i), []).append(v)
    keys = list(clusters)
    boots = {m: [] for m in models}
    for _ in range(n_boot if votes else 0):
        sample = [v for _ in keys for v in clusters[keys[rng.randrange(len(keys))]]]
        for m, r in elo(bradley_terry(sample, models), anchor).items():
            boots[m].append(r)
    wins, games = win_totals(votes, models)
    ci = {m: ([sorted(b)[int(0.025 * len(b))], sorted(b)[int(0.975 * len(b)) - 1]] if b else [None, None])
          for m, b in boots.items()}
    return {"rating": point, "ci95": ci, "votes": sum(g for row in games.values() for g in row.values()) // 2,
            "win_rate": {i: {j: (wins[i][j] / games[i][j] if games[i][j] else None) for j in models if j != i}
                         for i in models},
            "games": {i: {j: games[i][j] for j in models if j != i} for i in models}}
