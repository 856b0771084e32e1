"""Pins the scripted annotator's rubric on hand-written examples (scores computed by hand from the docstring)."""

import pytest

from core.annotator import ScriptedAnnotator, rubric

QA = {"id": "qa1", "task": "story_qa", "slot": "place", "expected": "park", "name": "Tom",
      "distractors": ["beach"], "messages": [{"role": "user", "content":
      "Tom went to the park. Mia went to the beach.\nQuestion: Where did Tom go?"}]}
ARITH = {"id": "ar1", "task": "arithmetic", "expected": 7, "a": 3, "b": 4, "op": "plus"}
STORY = {"id": "st1", "task": "story_write", "required": ["Anna", "dog", "beach"]}
GREET = {"id": "gr1", "task": "greeting", "required": ["Ben", "red", "kite"]}

strict = ScriptedAnnotator("strict")
stylist = ScriptedAnnotator("stylist")


@pytest.mark.parametrize("prompt, response, expected", [
    # correct(4) + polite(1) + ending(1)
    (QA, "Tom went to the park.", 6.0),
    # the distractor's place: correct 0 -> 0 + 1 + 1
    (QA, "Tom went to the beach.", 2.0),
    # hedging with both places is not an answer
    (QA, "Tom went to the park or the beach.", 2.0),
    # rude: polite 0 -> 4 + 0 + 1
    (QA, "Ugh, fine. Tom went to the park.", 5.0),
    # no ending punctuation -> 4 + 1 + 0
    (QA, "Tom went to the park", 5.0),
    # repeated twice: repeats 1, excess 1 -> 6 - 1 - 0.5
    (QA, "Tom went to the park. Tom went to the park.", 4.5),
    (ARITH, "3 plus 4 is 7.", 6.0),
    (ARITH, "3 plus 4 is 8.", 2.0),
    (ARITH, "7", 5.0),
    # generic answers earn nothing for correctness: 0 + 1 + 1 - 0.5 (one sentence too many)
    (ARITH, "That is a good question. I do not know.", 1.5),
    # "ugh" inside a word is not rude
    (ARITH, "I laughed. 3 plus 4 is 7.", 5.5),
    (STORY, "One day Anna went to the beach. Anna saw a dog. Anna went home. The end.", 6.0),
    # 2 of 3 required items, and stories must end with "The end." -> 4*2/3 + 1 + 0
    (STORY, "One day Anna went to the beach. Anna saw a cat. Anna went home.", 4 * 2 / 3 + 1),
    (GREET, "Hello Ben! Nice to meet you. I like your red kite.", 6.0),
    (GREET, "Hello Sam! Nice to meet you. I like your red kite.", 4 * 2 / 3 + 2),
    # empty is worst: -w.correct
    (GREET, "   ", -4.0),
])
def test_strict_rubric_scores(prompt, response, expected):
    assert strict.score(prompt, response) == pytest.approx(expected)


def test_rubric_parts():
    parts = rubric(QA, "Go away. Tom went to the park. Tom went to the park.")
    assert parts == {"correct": 1.0, "polite": 0.0, "ending": 1.0, "repeats": 1, "excess": 1, "empty": False}


def test_rank_with_ties_shares_the_best_rank():
    responses = ["Tom went to the beach.", "Tom went to the park.", "Tom went to the park!", "Go away."]
    # scores: 2, 6, 6, 0+0+1=1
    assert strict.rank(QA, responses) == [3, 1, 1, 4]


def test_compare_tie_and_both_bad():
    assert strict.compare(QA, "Tom went to the park.", "Tom went to the park!") == "tie"
    assert strict.compare(QA, "Tom went to the park.", "Tom went to the beach.") == "a"
    assert strict.compare(QA, "Go away", "") == "both_bad"   # 0 and -4, both below 1


def test_personas_disagree_on_manners_versus_correctness():
    rude_complete = "Ugh. One day Anna went to the beach. Anna saw a dog. The end."
    polite_incomplete = "One day Anna went to the beach. Anna saw a cat. The end."
    # strict: 4 + 0 + 1 = 5 versus 4*2/3 + 1 + 1 = 4.67; stylist: 2.5 + 0 + 1.5 = 4 versus 2.5*2/3 + 2.5 + 1.5 = 5.67
    assert strict.compare(STORY, rude_complete, polite_incomplete) == "a"
    assert stylist.compare(STORY, rude_complete, polite_incomplete) == "b"


def test_noise_is_reproducible_and_seeded():
    a, b = ScriptedAnnotator("strict", noise=0.5, seed=1), ScriptedAnnotator("strict", noise=0.5, seed=1)
    c = ScriptedAnnotator("strict", noise=0.5, seed=2)
    r = "Tom went to the park."
    assert a.score(QA, r) == b.score(QA, r) != c.score(QA, r)
    assert abs(a.score(QA, r) - 6.0) < 2.5


def test_unknown_persona_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown persona 'nice'"):
        ScriptedAnnotator("nice")
