"""Bradley-Terry: recovers known strengths from simulated votes; ties, prior and intervals behave."""

import math
import random

import pytest

from core.ratings import bradley_terry, elo, ratings, win_totals


def simulate(strength: dict[str, float], n: int, tie_rate: float = 0.0, seed: int = 0):
    rng, models, votes = random.Random(seed), list(strength), []
    for _ in range(n):
        a, b = rng.sample(models, 2)
        if rng.random() < tie_rate:
            votes.append((a, b, "tie"))
        else:
            votes.append((a, b, "a" if rng.random() < strength[a] / (strength[a] + strength[b]) else "b"))
    return votes


def test_recovers_known_strengths():
    truth = {"base": 0.25, "sft": 1.0, "dpo": 2.0, "ppo": 4.0}
    fit = bradley_terry(simulate(truth, 20_000), list(truth), prior=0.0)
    g = math.exp(sum(math.log(v) for v in truth.values()) / len(truth))
    for m in truth:
        assert fit[m] == pytest.approx(truth[m] / g, rel=0.08)
    r = elo(fit, anchor="sft")
    assert r["sft"] == pytest.approx(1000) and r["dpo"] - r["sft"] == pytest.approx(400 * math.log10(2), abs=25)


def test_hand_counted_two_model_case_and_ties():
    # 3 wins for x, 1 for y, 2 ties -> x has 4 of 6 points; MLE ratio s_x/s_y = 4/2 = 2
    votes = [("x", "y", "a")] * 3 + [("y", "x", "a")] + [("x", "y", "tie")] * 2 + [("x", "y", "both_bad")]
    wins, games = win_totals(votes, ["x", "y"])
    assert (wins["x"]["y"], wins["y"]["x"], games["x"]["y"]) == (4.0, 2.0, 6)
    s = bradley_terry(votes, ["x", "y"], prior=0.0)
    assert s["x"] / s["y"] == pytest.approx(2.0, rel=1e-6)


def test_prior_keeps_a_model_without_wins_finite_and_intervals_hold_the_estimate():
    votes = [("a", "b", "a")] * 10
    s = bradley_terry(votes, ["a", "b", "c"])       # c never played: stays in the middle
    assert all(math.isfinite(v) and v > 0 for v in s.values()) and s["a"] > s["c"] > s["b"]
    r = ratings(simulate({"a": 1.0, "b": 2.0}, 400), ["a", "b"], anchor="a", n_boot=200)
    lo, hi = r["ci95"]["b"]
    assert r["rating"]["a"] == pytest.approx(1000) and lo < r["rating"]["b"] < hi and lo > 1000
    assert r["votes"] == 400 and r["win_rate"]["b"]["a"] == pytest.approx(2 / 3, abs=0.07)


def test_resampling_whole_prompts_widens_the_interval_of_correlated_votes():
    base = simulate({"a": 1.0, "b": 1.5}, 100, seed=3)
    votes = [v for v in base for _ in range(3)]               # three annotators agree on every prompt
    groups = [str(i) for i in range(len(base)) for _ in range(3)]
    flat = ratings(votes, ["a", "b"], anchor="a", n_boot=300)["ci95"]["b"]
    grouped = ratings(votes, ["a", "b"], anchor="a", n_boot=300, groups=groups)["ci95"]["b"]
    assert grouped[1] - grouped[0] > 1.4 * (flat[1] - flat[0])   # ~sqrt(3) wider


def test_the_same_votes_in_another_order_give_the_same_ratings_and_intervals():
    base = simulate({"a": 1.0, "b": 1.5, "c": 0.7}, 120, seed=5)
    groups = [f"p{i % 40}" for i in range(len(base))]
    shuffled = list(zip(base, groups))
    random.Random(1).shuffle(shuffled)
    first = ratings(base, ["a", "b", "c"], anchor="a", n_boot=100, groups=groups)
    again = ratings([v for v, _ in shuffled], ["a", "b", "c"], anchor="a", n_boot=100, groups=[g for _, g in shuffled])
    assert again["rating"] == first["rating"] and again["ci95"] == first["ci95"]  # exactly: the arena's order varies
