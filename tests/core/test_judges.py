"""Judges for the report card: scripted, reward model and local LLM, the length-controlled win rate, and
the errors a wrong judge gives before any work."""

import pytest

from core.config import UserError
from core.data import load_rows
from core.judges import (JudgeSettings, LLMJudge, agreement, choice, length_controlled, make_judge, paired_change,
                         pairwise, parse_verdict, rank, win_rate)


@pytest.mark.parametrize("reply, verdict", [("A", "A"), ("b", "B"), ("Response B.", "B"), ("**A** is better", "A"),
                                            (" B) because", "B"), ("Both are fine", None), ("", None),
                                            ("Answer: A", None), ("AB", None)])
def test_verdicts_are_parsed_only_when_the_reply_names_one_answer(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    # A judge that prefers the longer answer 9 times in 10; a is longer on 70 of 100 prompts.
    la = [20] * 70 + [10] * 30
    lb = [10] * 70 + [20] * 30
    out = [1.0] * 63 + [0.0] * 7 + [1.0] * 3 + [0.0] * 27
    r = pairwise(out, la, lb, n_boot=200)
    assert r["win_rate"] == 0.66 and abs(r["length_controlled_win_rate"] - 0.5) < 0.01
    # No length difference: nothing to control for.
    assert length_controlled([1.0, 0.5, 0.0, 1.0], [5] * 4, [5] * 4) == 0.625
    # A real preference survives the control: a wins 80 % whatever the lengths.
    out = [1.0 if i % 5 else 0.0 for i in range(100)]
    assert abs(length_controlled(out, la, lb) - 0.8) < 0.03


def test_length_control_is_not_read_off_where_one_side_is_shorter_almost_everywhere():
    # A policy that got shorter on 95 of 100 prompts: ties where it lost a sentence, losses where it lost the
    # answer. A fit read at equal lengths would extrapolate (it said 95 % for such a control run), so: None.
    la, lb = [10] * 60 + [3] * 35 + [20] * 5, [20] * 100
    out = [0.5] * 60 + [0.0] * 35 + [1.0] * 5
    assert length_controlled(out, la, lb) is None
    assert length_controlled(out, la, lb, support=0.05) is not None  # 5 of 100 on the other side: enough at 5 %


def test_paired_change_counts_one_sided_prompts_and_gives_the_exact_sign_test():
    # 200 prompts, both right on 150: a right alone on 8, b alone on 12 (a's rate 2 points lower): p 0.50.
    a = [True] * 150 + [True] * 8 + [False] * 12 + [False] * 30
    b = [True] * 150 + [False] * 8 + [True] * 12 + [False] * 30
    r = paired_change(a, b)
    assert (r["correct_only_a"], r["correct_only_b"]) == (8, 12)
    assert r["correct_change_p"] == pytest.approx(0.503, abs=1e-3)   # 2 * P(X <= 8), X ~ Bin(20, 1/2)
    # 0 vs 10 one-sided prompts: 2 / 2^10; no disagreement at all: p 1.
    assert paired_change([False] * 10, [True] * 10)["correct_change_p"] == pytest.approx(0.002, abs=1e-3)
    assert paired_change([True, False], [True, False])["correct_change_p"] == 1.0


def test_several_answers_per_prompt_count_every_answer_but_resample_and_test_prompts():
    # 3 prompts, 2 answers each (sample-major): prompt 0 wins twice, prompt 1 wins once and loses once, prompt 2 ties
    out = [1.0, 1.0, 0.5, 1.0, 0.0, 0.5]
    r = win_rate(out, n_boot=500, samples=2)
    assert (r["n"], r["answers_per_prompt"], r["wins"], r["ties"], r["losses"]) == (3, 2, 3, 2, 1)
    assert r["win_rate"] == 0.667 and 0.5 <= r["ci95"][0] <= r["ci95"][1] <= 1.0  # per-prompt means 1, 0.5, 0.5
    assert win_rate(out, n_boot=500) == {**win_rate(out, n_boot=500, samples=1)}  # one answer each: as before
    assert win_rate(out, n_boot=500)["n"] == 6
    # correctness: a prompt counts once, by its answers' mean; a's 2 of 2 against b's 1 of 2 is one prompt for a
    a = [True, True, False, True, False, False]   # per prompt: 2, 1, 0 of 2
    b = [False, False, False, True, True, False]  # per prompt: 1, 1, 0 of 2
    r = paired_change(a, b, samples=2)
    assert (r["correct_only_a"], r["correct_only_b"]) == (1, 0) and r["correct_change_p"] == 1.0
    with pytest.raises(ValueError, match="not 2 per prompt"):
        win_rate(out[:5], samples=2)


def test_scripted_judge_only_for_world_prompts(world_dir):
    from core.annotator import ScriptedAnnotator
    prompts = load_rows(world_dir / "prompts_heldout.jsonl")[:6]
    judge = make_judge(JudgeSettings(), prompts)
    a, b = [p["reference"] for p in prompts], ["I am not sure about that."] * 6
    assert judge.compare(prompts, a, b) == [ScriptedAnnotator().verdict(p, x, y)[0] for p, x, y in zip(prompts, a, b)]
    assert judge.compare(prompts, a, b) == [1.0] * 6
    with pytest.raises(UserError, match=r"prompt 'x' is not a world prompt.*choose judge.kind reward_model or llm"):
        make_judge(JudgeSettings(), [{"id": "x", "messages": [{"role": "user", "content": "hi"}]}])


def test_reward_model_judge_follows_the_scores_and_ties_equal_answers(reward_model_dir, world_dir):
    from core.reward import load_reward_model, reward_scores
    prompts = load_rows(world_dir / "prompts_heldout.jsonl")[:8]
    judge = make_judge(JudgeSettings(kind="reward_model", path=str(reward_model_dir)), prompts)
    a, b = [p["reference"] for p in prompts], [p["answer"] + " By the way, snow is cold." for p in prompts]
    model, tok = load_reward_model(reward_model_dir)
    sa = reward_scores(model, tok, [p["messages"] + [{"role": "assistant", "content": x}] for p, x in zip(prompts, a)])
    sb = reward_scores(model, tok, [p["messages"] + [{"role": "assistant", "content": x}] for p, x in zip(prompts, b)])
    assert judge.compare(prompts, a, b) == [1.0 if x > y else 0.0 for x, y in zip(sa, sb)]
    assert judge.compare(prompts, a, a) == [0.5] * 8
    assert judge.parse_failures == 0


def test_a_judge_of_the_wrong_kind_or_without_a_path_fails_before_any_work(reward_model_dir, base_model_dir, tmp_path):
    with pytest.raises(UserError, match=r"is LlamaForCausalLM; use judge.kind llm"):
        make_judge(JudgeSettings(kind="reward_model", path=str(base_model_dir)), [])
    with pytest.raises(UserError, match=r"is LlamaForSequenceClassification; use judge.kind reward_model"):
        make_judge(JudgeSettings(kind="llm", path=str(reward_model_dir)), [])
    with pytest.raises(UserError, match="not a checkpoint directory"):
        make_judge(JudgeSettings(kind="llm", path=str(tmp_path)), [])
    with pytest.raises(UserError, match="judge.path: a llm judge needs a checkpoint"):
        make_judge(JudgeSettings(kind="llm"), [])
    with pytest.raises(UserError, match="judge.kind must be one of scripted, reward_model, llm"):
        make_judge(JudgeSettings(kind="gpt"), [])


def test_llm_judge_asks_both_orders_cancels_position_bias_and_counts_parse_failures(base_model_dir, world_dir,
                                                                                   monkeypatch):
    prompts = load_rows(world_dir / "prompts_heldout.jsonl")[:4]
    judge = make_judge(JudgeSettings(kind="llm", path=str(base_model_dir), max_new_tokens=3), prompts)
    assert isinstance(judge, LLMJudge)
    a, b = ["good"] * 4, ["bad"] * 4
    # An untrained model's replies name no answer: every one is a counted failure, every pair a tie.
    out = judge.compare(prompts, a, b)
    assert judge.asked == 8 and judge.parse_failures == 8 and out == [0.5] * 4
    # A judge that always names the first position: both orders disagree, so nothing is won.
    replies = iter(["A"] * 8)
    monkeypatch.setattr(LLMJudge, "_ask", lambda self, p, x, y: [next(replies) for _ in p])
    assert judge.compare(prompts, a, b) == [0.5] * 4
    # A judge that reads the content: "good" wins in both orders.
    monkeypatch.setattr(LLMJudge, "_ask", lambda self, p, x, y: ["A" if s == "good" else "B" for s in x])
    assert judge.compare(prompts, a, b) == [1.0] * 4 and judge.compare(prompts, b, a) == [0.0] * 4


def test_agreement_with_labelled_pairs(pairs, world_dir):
    from core.data import load_preferences
    rows = load_preferences(pairs[1])
    prompts = {p["id"]: p for p in load_rows(world_dir / "prompts_train.jsonl")}
    for r, p in zip(rows, load_rows(pairs[1])):
        r["prompt_id"] = next(k for k, v in prompts.items() if v["messages"] == p["prompt"])
    judge = make_judge(JudgeSettings(), list(prompts.values()))
    assert agreement(judge, prompts, rows) == {"pairs": len(rows), "accuracy": 1.0}
    assert agreement(judge, prompts, []) is None


def test_ranks_come_from_every_pairwise_verdict_in_one_batch():
    class Longer:  # prefers the longer answer, ties equal lengths; records how it was asked
        calls = []

        def compare(self, prompts, a, b):
            self.calls.append(len(a))
            return [1.0 if len(x) > len(y) else 0.0 if len(y) > len(x) else 0.5 for x, y in zip(a, b)]

    judge = Longer()
    assert rank(judge, {"messages": []}, ["ccc", "a", "bb", "dd"]) == [1, 4, 2, 2]
    assert judge.calls == [6]                      # C(4, 2) pairs, one call
    assert rank(judge, {"messages": []}, ["x", "y"]) == [1, 1]
    assert [choice(o) for o in (1.0, 0.5, 0.0)] == ["a", "tie", "b"]
