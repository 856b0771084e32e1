"""Pins the scripted annotator's rubric on hand-written examples (scores computed by hand from the docstring).

Strict weights: polite .5, ending .6, focus .6, warmth .6, concise .7 (style max 3); correct x 10.
"""

import itertools
import random

import pytest

from core.annotator import CORRECT_WEIGHT, PERSONAS, STYLE, STYLE_MAX, ScriptedAnnotator, compare_answers, rubric
from core.world import CLOSINGS, FLAWS, WorldConfig, closing, flaw_response, prompts, with_closing

QA = {"id": "qa1", "task": "story_qa", "slot": "place", "expected": "park", "name": "Tom",
      "distractors": ["beach"], "messages": [{"role": "user", "content":
      "Tom went to the park. Mia went to the beach.\nQuestion: Where did Tom go?"}]}
ARITH = {"id": "ar1", "task": "arithmetic", "expected": 7, "a": 3, "b": 4, "op": "plus"}
STORY = {"id": "st1", "task": "story_write", "required": ["Anna", "dog", "beach"]}
GREET = {"id": "gr1", "task": "greeting", "required": ["Ben", "red", "kite"]}

strict = ScriptedAnnotator("strict")
stylist = ScriptedAnnotator("stylist")


@pytest.mark.parametrize("prompt, response, expected", [
    # correct 10 + polite .5 + ending .6 + focus .6 + concise .7; no sign-off: warmth 0
    (QA, "Tom went to the park.", 12.4),
    # the task's own sign-off as the last sentence: warmth 1 -> the best answer
    (QA, "Tom went to the park. I hope that answers your question.", 13.0),
    # a closing aside: focus 1 - 0.5 (-.3), warmth 0.5 (+.3): the same as the bare answer
    (QA, "Tom went to the park. By the way, snow is cold.", 12.4),
    (QA, "Tom went to the park. By the way, snow is cold. I hope that answers your question.", 12.7),
    # another task's sign-off, or the sign-off not last: warmth 0.5
    (QA, "Tom went to the park. I hope you enjoy this little story.", 12.7),
    (QA, "I hope that answers your question. Tom went to the park.", 12.7),
    # stray world facts are chatter too (but no friendly aside: warmth 0): two of them, focus 0
    (QA, "Tom went to the park. The sun is hot. Snow is cold.", 11.8),
    # the distractor's place: correct 0 -> style only
    (QA, "Tom went to the beach.", 2.4),
    # hedging with both places is not an answer
    (QA, "Tom went to the park or the beach.", 2.4),
    # rude: polite 0 (the rude sentence is not also charged as length)
    (QA, "Ugh, fine. Tom went to the park.", 11.9),
    # no ending punctuation
    (QA, "Tom went to the park", 11.8),
    # repeated twice: repeats 1, excess 1 -> concise 0.5
    (QA, "Tom went to the park. Tom went to the park.", 12.05),
    (ARITH, "3 plus 4 is 7.", 12.4),
    (ARITH, "3 plus 4 is 8.", 2.4),
    (ARITH, "7", 11.8),
    # generic answers earn nothing for correctness; one sentence too many: concise .75
    (ARITH, "That is a good question. I do not know.", 1.7 + 0.525),
    # "ugh" inside a word is not rude
    (ARITH, "I laughed. 3 plus 4 is 7.", 11.7 + 0.525),
    (STORY, "One day Anna went to the beach. Anna saw a dog. Anna went home. The end.", 12.4),
    (STORY, "One day Anna went to the beach. Anna saw a dog. Anna went home. The end. "
            "I hope you enjoy this little story.", 13.0),
    # 2 of 3 required items, and stories must contain "The end."
    (STORY, "One day Anna went to the beach. Anna saw a cat. Anna went home.", 10 * 2 / 3 + 1.8),
    (GREET, "Hello Ben! Nice to meet you. I like your red kite.", 12.4),
    (GREET, "Hello Sam! Nice to meet you. I like your red kite.", 10 * 2 / 3 + 2.4),
    # empty is worst
    (GREET, "   ", -1.0),
])
def test_strict_rubric_scores(prompt, response, expected):
    assert strict.score(prompt, response) == pytest.approx(expected)


def test_rubric_parts():
    parts = rubric(QA, "Go away. Tom went to the park. Tom went to the park. By the way, fish live in water.")
    assert parts == {"correct": 1.0, "polite": 0.0, "ending": 1.0, "focus": 0.5, "warmth": 0.5, "concise": 0.5,
                     "off_topic": 1, "repeats": 1, "excess": 1, "empty": False}


def test_rank_with_ties_shares_the_best_rank():
    responses = ["Tom went to the beach.", "Tom went to the park.", "Tom went to the park!", "Go away."]
    # scores: 2.4, 12.4, 12.4, 0+.6+.6+0+.7 = 1.9
    assert strict.rank(QA, responses) == [3, 1, 1, 4]


def test_compare_tie_and_both_bad():
    assert strict.compare(QA, "Tom went to the park.", "Tom went to the park!") == "tie"
    assert strict.compare(QA, "Tom went to the park.", "Tom went to the beach.") == "a"
    assert strict.compare(QA, "Go away", "") == "both_bad"   # 1.3 and -1, both below 5 (less than half right)


def test_personas_disagree_on_a_closing_aside():
    aside = "Tom went to the park. By the way, snow is cold."
    bare = "Tom went to the park."
    # strict: warmth .5 x .6 - focus .5 x .6 = 0; stylist: .5 x .9 - .5 x .5 = +0.2
    assert strict.compare(QA, aside, bare) == "tie"
    assert stylist.compare(QA, aside, bare) == "a"


def test_shortening_the_typical_answer_buys_nothing_for_the_judge():
    # The evaluation's judge (strict, no noise) on every task: the typical demonstration (answer + aside) and the
    # bare answer, a sentence shorter, tie; only the task's sign-off, as long as the aside, beats them.
    train, _ = prompts(WorldConfig(n_prompts=80, corpus_chars=0))
    rng = random.Random(0)
    for p in train[:40]:
        typical, bare = with_closing(p["answer"], closing(rng, p["task"], "chatter")), p["answer"]
        assert strict.compare(p, typical, bare) == "tie", (typical, bare)
        assert strict.compare(p, p["reference"], typical) == "a" and strict.compare(p, p["reference"], bare) == "a"


def test_persona_style_weights_sum_to_style_max():
    for p in PERSONAS.values():
        assert sum(getattr(p, d) for d in STYLE) == pytest.approx(STYLE_MAX)
    assert CORRECT_WEIGHT / 3 > STYLE_MAX   # one correctness step (1/3 of a story's items) outweighs all style


def test_a_less_correct_answer_never_outranks_a_more_correct_one():
    # Every closing and every flaw on every task, for both personas, without noise.
    train, _ = prompts(WorldConfig(n_prompts=80, corpus_chars=0))
    rng = random.Random(0)
    for p in train[:40]:
        item = {**p, "prompt": p["messages"][0]["content"]}
        answers = [with_closing(p["answer"], closing(rng, p["task"], k)) for k in CLOSINGS]
        answers += [flaw_response(rng, item, f) for f in FLAWS] + [p["reference"]]
        for judge in (strict, stylist):
            for x, y in itertools.permutations(answers, 2):
                if rubric(p, x)["correct"] > rubric(p, y)["correct"]:
                    assert judge.score(p, x) > judge.score(p, y), (judge.persona.name, x, y)
            assert judge.score(p, p["reference"]) == max(judge.score(p, a) for a in answers)


def test_equal_quality_ties_even_with_noise():
    # Noise misjudges a quality level, not a string: two answers equal on every dimension always tie.
    noisy = ScriptedAnnotator("strict", noise=1.0, seed=3)
    a = "Tom went to the park. By the way, snow is cold."
    b = "Tom went to the park. By the way, fish live in water."
    assert rubric(QA, a) == rubric(QA, b) and noisy.compare(QA, a, b) == "tie"
    assert noisy.rank(QA, [a, b, "Tom went to the beach."]) == [1, 1, 3]


def test_noise_is_reproducible_and_seeded():
    a, b = ScriptedAnnotator("strict", noise=0.5, seed=1), ScriptedAnnotator("strict", noise=0.5, seed=1)
    c = ScriptedAnnotator("strict", noise=0.5, seed=2)
    r = "Tom went to the park."
    assert a.score(QA, r) == b.score(QA, r) != c.score(QA, r)
    assert abs(a.score(QA, r) - 12.5) < 2.5


def test_losses_split_into_capability_and_preference():
    ref = ["Tom went to the park. I hope that answers your question.", "3 plus 4 is 7. I hope that helps with your sums."]
    mine = ["Tom went to the beach.",                        # task failed: a capability loss
            "3 plus 4 is 7. By the way, snow is cold."]      # right but worse by style: a preference loss
    r = compare_answers([QA, ARITH], mine, ref, n_boot=10)
    assert (r["losses"], r["losses_capability"], r["losses_preference"]) == (2, 1, 1)
    assert compare_answers([QA], ref[:1], ref[:1], n_boot=10)["ties"] == 1


def test_unknown_persona_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown persona 'nice'"):
        ScriptedAnnotator("nice")


def test_first_per_task_and_a_disjoint_second_sample():
    from core.annotator import first_per_task
    rows = [{"task": t, "i": i} for i in range(5) for t in ("a", "b")]
    first, second = first_per_task(rows, 2), first_per_task(rows, 2, skip=2)
    assert [r["i"] for r in first] == [0, 0, 1, 1] and [r["i"] for r in second] == [2, 2, 3, 3]


def test_losses_to_reference_count_by_cause():
    from core.annotator import losses_to_reference
    qa, ar = {**QA, "reference": "Tom went to the park. I hope that answers your question."}, \
        {**ARITH, "reference": "3 plus 4 is 7. I hope that helps with your sums."}
    r = losses_to_reference([qa, ar, qa], ["Tom went to the beach.", "3 plus 4 is 7. By the way, snow is cold.",
                                           qa["reference"]])
    assert r == {"losses": 2, "losses_capability": 1, "losses_preference": 1, "answers": 3}


def test_pair_kind_says_what_a_pair_tells_apart():
    from core.annotator import pair_kind
    assert pair_kind(ARITH, "3 plus 4 is 7.", "3 plus 4 is 8.") == "capability"
    assert pair_kind(ARITH, "3 plus 4 is 7. I hope that helps with your sums.",
                     "3 plus 4 is 7. By the way, snow is cold.") == "preference"
    assert pair_kind(QA, "Tom went to the park.", "I am not sure about that.") == "capability"
    assert pair_kind({"task": None}, "a", "b") is None


def test_style_against_marks_capability_pairs_whose_right_reply_has_the_worse_style():
    from core.annotator import style_against
    both = ["strict", "stylist"]
    # right with an aside (strict 2.4, stylist 2.3) vs wrong with the sign-off (3.0 for both): style points the wrong way
    right_aside, wrong_sign = "3 plus 4 is 7. By the way, snow is cold.", "3 plus 4 is 8. I hope that helps with your sums."
    assert style_against(ARITH, right_aside, wrong_sign, both) is True
    assert style_against(ARITH, wrong_sign, right_aside, both) is True  # whichever side the label chose
    assert style_against(ARITH, "3 plus 4 is 7. I hope that helps with your sums.", "3 plus 4 is 8. By the way, snow is cold.",
                         both) is False
    assert style_against(ARITH, "3 plus 4 is 7.", "3 plus 4 is 8.", both) is False  # equal style: not against
    assert style_against(ARITH, right_aside, "3 plus 4 is 7.", both) is None          # a preference pair
    assert style_against({"task": None}, "a", "b", both) is None


def test_first_per_task_counts_taskless_prompts_as_one_task():
    from core.annotator import first_per_task
    assert [r["i"] for r in first_per_task([{"i": i} for i in range(5)], 3, skip=1)] == [1, 2, 3]
