"""DPO's implicit reward on preference pairs (core/reward.py), checked against a forward pass by hand."""

import copy
import math

import pytest
import torch

from core.config import UserError
from core.model import load_causal_lm
from core.reward import IMPLIED, accuracy_report, implicit_pair_scores, pair_token_ids

ROWS = [{"prompt": [{"role": "user", "content": "What is 2 plus 3?"}],
         "chosen": [{"role": "assistant", "content": "2 plus 3 is 5."}],
         "rejected": [{"role": "assistant", "content": "It is 6. By the way, snow is cold."}],
         "kind": "capability"}]


def reply_logprob(model, prompt: list[int], reply: list[int]) -> float:
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([prompt + reply])).logits[0].float().log_softmax(-1)
    return sum(logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(reply))


def test_implicit_reward_is_beta_times_the_replys_log_ratio(tokenizer, base_model_dir, other_model_dir):
    (prompt, chosen, rejected), = ids = pair_token_ids(tokenizer, ROWS)
    full = tokenizer.apply_chat_template(ROWS[0]["prompt"] + ROWS[0]["chosen"], tokenize=True,
                                         return_dict=True)["input_ids"]
    assert prompt + chosen == full and chosen[-1] == tokenizer.eos_token_id and len(rejected) > len(chosen)
    policy, reference = load_causal_lm(other_model_dir).eval(), load_causal_lm(base_model_dir).eval()
    (r_chosen, r_rejected), = implicit_pair_scores(policy, reference, tokenizer.pad_token_id, ids, beta=0.5)
    for got, reply in ((r_chosen, chosen), (r_rejected, rejected)):
        by_hand = 0.5 * (reply_logprob(policy, prompt, reply) - reply_logprob(reference, prompt, reply))
        assert got == pytest.approx(by_hand, abs=1e-4) and got != 0
    # the reference against itself defines no reward: every margin is 0, so no pair counts as won
    same = implicit_pair_scores(reference, reference, tokenizer.pad_token_id, ids * 3, beta=0.5)
    assert same == [(0.0, 0.0)] * 3 and accuracy_report(ROWS * 3, same)["accuracy"] == 0.0


def test_implicit_reward_takes_the_form_of_the_divergence_and_keeps_every_pairs_order(tokenizer, base_model_dir,
                                                                                   other_model_dir):
    ids = pair_token_ids(tokenizer, ROWS)
    policy, reference = load_causal_lm(other_model_dir).eval(), load_causal_lm(base_model_dir).eval()
    (rc, rr), = implicit_pair_scores(policy, reference, tokenizer.pad_token_id, ids, beta=0.5)
    (fc, fr), = implicit_pair_scores(policy, reference, tokenizer.pad_token_id, ids, beta=0.5, divergence="forward_kl")
    (jc, jr), = implicit_pair_scores(policy, reference, tokenizer.pad_token_id, ids, beta=0.5, divergence="js_divergence")
    for r, f, j in ((rc, fc, jc), (rr, fr, jr)):  # r = 0.5 x: forward 0.5 (1 - e^-x), JS 0.5 log(2 sigmoid(x))
        x = r / 0.5
        assert f == pytest.approx(0.5 * (1 - math.exp(-x)), rel=1e-6)
        assert j == pytest.approx(0.5 * math.log(2 / (1 + math.exp(-x))), rel=1e-6)
    assert (rc > rr) == (fc > fr) == (jc > jr) and rc != rr
    # a reply pushed far down does not overflow: its forward-KL score is finite and very negative
    assert IMPLIED["forward_kl"](-5000.0) < -1e300 and IMPLIED["js_divergence"](-5000.0) < -600


def test_a_template_that_renders_the_prompt_otherwise_once_answered_is_refused(tokenizer):
    odd = copy.deepcopy(tokenizer)
    odd.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant says:{% endif %}")
    with pytest.raises(UserError, match="preference row 1: the chat template renders the prompt differently"):
        pair_token_ids(odd, ROWS)


def test_reinforcement_learning_reads_the_ensembles_mean_score(tokenizer, reward_model_dir, tmp_path):
    import shutil
    from core.reward import ensemble_scores, load_reward_ensemble, load_reward_model, reward_scores
    stage = tmp_path / "reward"
    shutil.copytree(reward_model_dir, stage / "model")
    other, _ = load_reward_model(reward_model_dir)
    with torch.no_grad():
        other.score.weight.mul_(-3.0)   # a member that disagrees
    other.save_pretrained(stage / "ensemble" / "1")
    tokenizer.save_pretrained(stage / "ensemble" / "1")
    convs = [ROWS[0]["prompt"] + ROWS[0][side] for side in ("chosen", "rejected")]
    members = load_reward_ensemble(stage / "model", tokenizer)
    assert len(members) == 2
    alone = [reward_scores(m, t, convs) for m, t in members]
    assert alone[1] == pytest.approx([-3.0 * x for x in alone[0]], abs=1e-4) and alone[0][0] != 0
    assert ensemble_scores(members, convs) == pytest.approx([-x for x in alone[0]], abs=1e-4)  # (1 - 3) / 2
    assert len(load_reward_ensemble(reward_model_dir)) == 1  # no ensemble/ beside it: the model alone


def test_batches_of_similar_length_give_each_row_its_own_score_in_order(tokenizer, reward_model_dir, base_model_dir):
    from core.generation import completion_logprobs
    from core.reward import load_reward_model, reward_scores
    rm, tok = load_reward_model(reward_model_dir)
    replies = ["5.", "2 plus 3 is 5. By the way, the sun is hot and the sky is blue today.", "It is 6.", "Five."]
    convs = [ROWS[0]["prompt"] + [{"role": "assistant", "content": r}] for r in replies]
    batched = reward_scores(rm, tok, convs, batch_size=2)  # lengths interleaved: sorting reorders the rows
    alone = [reward_scores(rm, tok, [c])[0] for c in convs]
    assert batched == pytest.approx(alone, abs=1e-5) and len(set(batched)) == 4
    lm = load_causal_lm(base_model_dir).eval()
    prompts = [tokenizer.apply_chat_template(ROWS[0]["prompt"], tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"]] * 4
    answers = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
    got = completion_logprobs(lm, prompts, answers, tokenizer.pad_token_id, batch_size=2)
    assert [len(g) for g in got] == list(map(len, answers))
    for g, p, a in zip(got, prompts, answers):
        assert sum(g) == pytest.approx(reply_logprob(lm, p, a), abs=1e-4)
