"""Reward-model scoring: one scalar per (prompt, response) conversation, read at its last real token.

A reward model is an `AutoModelForSequenceClassification` with one label. The conversation is
rendered with the chat template (so it ends in the assistant's EOS) and right-padded; the model
reads the score at the last non-pad token, which needs `config.pad_token_id` set, and pad must
differ from EOS or the score would be read at the wrong place. Both are checked here.

A DPO policy defines a reward model too (its implicit reward, beta * log pi / pi_ref summed over the
response's tokens, or that log-ratio in the form its f-divergence gives it): `implicit_pair_scores` scores
held-out pairs with it, so the two can be compared on the same labels with `accuracy_report`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch

from core.config import UserError
from core.generation import chat_prompt_ids, completion_logprobs, device_of, length_order
from core.model import to_inference_device


def load_reward_model(path: str | Path, policy_tokenizer=None, policy_path: str | Path = "the policy"):
    """The reward model and its tokenizer, checked; with `policy_tokenizer`, also that both share one
    vocabulary and chat template (a score of text tokenized another way means nothing)."""
    from transformers import AutoModelForSequenceClassification

    from core.tokenizer import load_tokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a checkpoint directory (no config.json); train the reward model first")
    tok = load_tokenizer(path)
    if policy_tokenizer is not None and (tok.get_vocab() != policy_tokenizer.get_vocab()
                                         or tok.chat_template != policy_tokenizer.chat_template):
        raise UserError(f"{policy_path} and {path} have different tokenizers or chat templates; train the reward "
                        "model from this policy's SFT checkpoint (make reward)")
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    if model.config.num_labels != 1:
        raise UserError(f"{path}: a reward model has num_labels=1, this one has {model.config.num_labels}")
    if model.config.pad_token_id is None or model.config.pad_token_id == tok.eos_token_id:
        raise UserError(f"{path}: config.pad_token_id must be set and differ from EOS "
                        "(the score is read at the last non-pad token)")
    return to_inference_device(model.eval()), tok


def ensemble_members(path: str | Path) -> list[Path]:
    """The reward model at `path` (<stage>/model) and the other members the reward stage trained
    next to it (<stage>/ensemble/<i>), member 0 first."""
    extra = Path(path).parent / "ensemble"
    others = sorted((d for d in extra.iterdir() if d.is_dir()), key=lambda d: int(d.name)) if extra.is_dir() else []
    return [Path(path), *others]


def load_reward_ensemble(path: str | Path, policy_tokenizer=None, policy_path: str | Path = "the policy") -> list[tuple]:
    """(model, tokenizer) of the reward model at `path` and of every member trained beside it, each checked.

    Reinforcement learning reads their mean score: where the reward model cannot tell right from wrong (a sum,
    a looked-up name), its score still differs by a little between answers, and a policy optimised against
    one model amplifies exactly those differences (RLOO against one seed's model learned "16 minus 5 is 13",
    its faint liking for odd numbers; docs/evaluation.md); members trained with other seeds do not share them."""
    return [load_reward_model(p, policy_tokenizer, policy_path) for p in ensemble_members(path)]


def ensemble_inputs(path: str | Path) -> dict[str, Path]:
    """Every member's weights, for a stage's recorded inputs (a retrained member makes its resume state stale)."""
    return {f"reward_weights_{i}": p / "model.safetensors" for i, p in enumerate(ensemble_members(path))}


def ensemble_scores(members: list[tuple], conversations: list[list[dict]], batch_size: int = 32) -> list[float]:
    """The members' mean score of each conversation (`members` from `load_reward_ensemble`)."""
    scores = [reward_scores(m, t, conversations, batch_size) for m, t in members]
    return [sum(col) / len(col) for col in zip(*scores)]


@torch.no_grad()
def reward_scores(model, tokenizer, conversations: list[list[dict]], batch_size: int = 32) -> list[float]:
    """Score of each full conversation (the last message is the response being scored)."""
    ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations]
    out = [0.0] * len(ids)
    order, dev = length_order(list(map(len, ids))), device_of(model)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(x)
        for j, i in enumerate(idx):
            x[j, :len(ids[i])] = torch.tensor(ids[i])
            mask[j, :len(ids[i])] = 1
        scores = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).logits[:, 0].float().tolist()
        for i, s in zip(idx, scores):
            out[i] = s
    return out


def accuracy_report(rows: list[dict], scores: list[tuple[float, float]]) -> dict:
    """Pair accuracy and mean margin overall, per task, per agreement level and per kind of pair (capability:
    the answers differ in correctness; preference: only in style), each next to its label ceiling; capability
    pairs also by whether the more correct reply has the better style ("style with") or the worse ("style
    against": only a judge that checks the task orders those)."""
    def summary(idx: list[int]) -> dict:
        margins = [scores[i][0] - scores[i][1] for i in idx]
        agrees = [rows[i]["rubric_agrees"] for i in idx if rows[i].get("rubric_agrees") is not None]
        return {"pairs": len(idx), "accuracy": round(sum(m > 0 for m in margins) / len(idx), 3),
                "mean_margin": round(sum(margins) / len(idx), 3),
                "label_ceiling": round(sum(agrees) / len(agrees), 3) if agrees else None}

    groups: dict[str, dict[str, list[int]]] = {"by_task": defaultdict(list), "by_agreement": defaultdict(list),
                                               "by_kind": defaultdict(list), "capability_by_style": defaultdict(list)}
    for i, r in enumerate(rows):
        groups["by_task"][r.get("task") or "unknown"].append(i)
        if "agreement" in r:
            groups["by_agreement"]["unanimous" if r["agreement"] >= 1.0 else "majority"].append(i)
        if r.get("kind"):
            groups["by_kind"][r["kind"]].append(i)
        if r.get("style_against") is not None:  # capability pairs: does the style point the other way?
            groups["capability_by_style"]["style against" if r["style_against"] else "style with"].append(i)
    report = summary(list(range(len(rows))))
    for name, g in groups.items():
        report[name] = {k: summary(v) for k, v in sorted(g.items())}
    return report


def pair_token_ids(tokenizer, rows: list[dict]) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token ids of preference rows, as the chat template renders the prompt for
    the assistant's turn and each reply after it (with its EOS)."""
    out = []
    for i, r in enumerate(rows, 1):
        prompt = chat_prompt_ids(tokenizer, r["prompt"])
        replies = []
        for side in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(r["prompt"] + r[side], tokenize=True, return_dict=True)["input_ids"]
            if full[:len(prompt)] != prompt:
                raise UserError(f"preference row {i}: the chat template renders the prompt differently once a reply "
                                "follows it, so a reply's log-probability is undefined; use a template whose "
                                "generation prompt is a prefix of the conversation")
            replies.append(full[len(prompt):])
        out.append((prompt, *replies))
    return out


# A reply's implicit reward given its log-ratio x = log pi(reply) - log pi_ref(reply), per divergence (f-DPO): beta
# times f'(pi / pi_ref), the score DPO's loss compares (TRL's f_divergence_type). Each is increasing in x, so a
# pair's order, and the accuracy, is the same under all three; the margins differ. exp(-x) is clamped: a reply
# the policy pushed hundreds of nats down would overflow a float.
IMPLIED = {"reverse_kl": lambda x: x, "forward_kl": lambda x: 1 - math.exp(min(-x, 700.0)),
           "js_divergence": lambda x: math.log(2) - math.log1p(math.exp(min(-x, 700.0)))}


def implicit_pair_scores(policy, reference, pad_id: int, pairs: list[tuple[list[int], list[int], list[int]]],
                         beta: float, divergence: str = "reverse_kl") -> list[tuple[float, float]]:
    """(r_chosen, r_rejected) under the implicit reward of a DPO policy: beta * sum_t [log pi - log pi_ref]
    over the reply's tokens (`pairs` from `pair_token_ids`), or that log-ratio in `divergence`'s form (IMPLIED)."""
    prompts = [p for p, _, _ in pairs for _ in range(2)]
    replies = [x for _, c, r in pairs for x in (c, r)]
    # Small batches: the log-softmax over a hub model's vocabulary for long replies is the memory here.
    mine, ref = (completion_logprobs(m, prompts, replies, pad_id, batch_size=8) for m in (policy, reference))
    r = [beta * IMPLIED[divergence](sum(a) - sum(b)) for a, b in zip(mine, ref)]
    return list(zip(r[0::2], r[1::2]))
