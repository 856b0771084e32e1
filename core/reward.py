"""Reward-model scoring: one scalar per (prompt, response) conversation, read at its last real token.

A reward model is an `AutoModelForSequenceClassification` with one label. The conversation is
rendered with the chat template (so it ends in the assistant's EOS) and right-padded; the model
reads the score at the last non-pad token, which needs `config.pad_token_id` set, and pad must
differ from EOS or the score would be read at the wrong place. Both are checked here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.config import UserError
from core.generation import device_of
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


@torch.no_grad()
def reward_scores(model, tokenizer, conversations: list[list[dict]], batch_size: int = 32) -> list[float]:
    """Score of each full conversation (the last message is the response being scored)."""
    out: list[float] = []
    for start in range(0, len(conversations), batch_size):
        ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]
               for c in conversations[start:start + batch_size]]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(x)
        for i, row in enumerate(ids):
            x[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        dev = device_of(model)
        out += model(input_ids=x.to(dev), attention_mask=mask.to(dev)).logits[:, 0].float().tolist()
    return out
