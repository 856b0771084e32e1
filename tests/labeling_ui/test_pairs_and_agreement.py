"""Pure functions: judgments -> votes -> majority pairs, the split, agreement figures, item choice."""

from labeling_ui.agreement import pair_kappa, rank_alpha
from labeling_ui.pairs import aggregate, is_test, votes
from labeling_ui.sampling import ItemState, choose


def J(annotator, item, order, choice=None, ranks=None, prompt="p", kind=None):
    return {"annotator": annotator, "item_id": item, "prompt_id": prompt, "shown_order": order, "choice": choice,
            "ranks": ranks, "kind": kind or ("pair" if choice else "rank"), "flags": []}


def test_votes_follow_the_shown_order_and_rankings_give_one_vote_per_unequal_pair():
    assert votes(J("x", 1, [7, 3], "a")) == [(7, 3)]
    assert votes(J("x", 1, [7, 3], "b")) == [(3, 7)]
    assert votes(J("x", 1, [7, 3], "tie")) == [] == votes(J("x", 1, [7, 3], "both_bad"))
    # ranks per shown position; 11 and 12 tie at rank 2
    assert sorted(votes(J("x", 1, [10, 11, 12, 13], ranks=[1, 2, 2, 4]))) == sorted(
        [(10, 11), (10, 12), (10, 13), (11, 13), (12, 13)])


def test_a_ranking_gives_no_vote_between_two_responses_that_fail_the_task():
    j = J("x", 1, [10, 11, 12, 13], ranks=[1, 2, 3, 4])
    j["bad"] = [False, False, True, True]  # 12 and 13 both fail: which is less wrong is not taught
    assert sorted(votes(j)) == sorted([(10, 11), (10, 12), (10, 13), (11, 12), (11, 13)])
    j["bad"] = None  # a store row from before the marks, or none ticked
    assert len(votes(j)) == 6


def test_majority_aggregation_across_annotators_and_modes():
    js = [J("a", 1, [1, 2], "a"), J("b", 1, [2, 1], "b"), J("c", 1, [2, 1], "a"),   # 1>2, 1>2, 2>1
          J("a", 2, [3, 4], "a"), J("b", 2, [4, 3], "a"),                           # 3>4, 4>3: no majority
          J("c", 3, [5, 6, 7], ranks=[1, 2, 3], prompt="q")]
    pairs = {(p["chosen"], p["rejected"]): p for p in aggregate(js)}
    assert set(pairs) == {(1, 2), (5, 6), (5, 7), (6, 7)}
    assert pairs[(1, 2)]["votes_for"] == 2 and pairs[(1, 2)]["votes_against"] == 1
    assert abs(pairs[(1, 2)]["agreement"] - 2 / 3) < 1e-3 and pairs[(1, 2)]["agreed_by"] == ["a", "b"]
    assert {(p["chosen"], p["rejected"]) for p in aggregate(js, min_agreement=0.9)} == {(5, 6), (5, 7), (6, 7)}


def test_split_is_by_prompt_deterministic_and_near_the_fraction():
    ids = [f"prompt-{i}" for i in range(2000)]
    test = [i for i in ids if is_test(i, 0.1)]
    assert test == [i for i in ids if is_test(i, 0.1)] and 150 < len(test) < 250
    assert not any(is_test(i, 0.0) for i in ids)


def test_kappa_and_alpha_from_the_libraries_on_known_cases():
    same = [J(n, i, [1, 2] if n == "a" else [2, 1], "a" if (n == "a") == (i % 2 == 0) else "b", kind="pair")
            for n in ("a", "b") for i in range(6)]
    # a and b see opposite orders but always pick the same candidate: perfect agreement
    assert pair_kappa(same, min_common=3)["mean_kappa"] == 1.0
    opposite = [J("a", i, [1, 2], "a" if i % 2 else "b") for i in range(6)] + \
               [J("b", i, [1, 2], "b" if i % 2 else "a") for i in range(6)]
    assert pair_kappa(opposite, min_common=3)["mean_kappa"] == -1.0
    ranks = [J(n, i, [1, 2, 3], ranks=[1, 2, 3]) for n in ("a", "b", "c") for i in range(4)]
    assert rank_alpha(ranks)["alpha"] == 1.0
    flipped = ranks[:4] + [J("b", i, [1, 2, 3], ranks=[3, 2, 1]) for i in range(4)]
    assert rank_alpha(flipped)["alpha"] < 0


def test_item_choice_fewest_judgments_first_or_smallest_margin_when_active():
    items = [ItemState(1, 2, 0.1), ItemState(2, 0, 5.0), ItemState(3, 1, None)]
    assert choose(items) == 2
    assert choose(items, active=True) == 1
    assert choose([ItemState(3, 1, None), ItemState(4, 0, None)], active=True) == 4
    assert choose([]) is None
    # an ensemble's disagreement outranks the margin: a near-tie everyone agrees on teaches little
    ens = [ItemState(1, 0, 0.1, 0.05), ItemState(2, 0, 3.0, 0.9), ItemState(3, 0, 0.0, None)]
    assert choose(ens, active=True) == 2 and choose(ens) in (1, 2, 3)
