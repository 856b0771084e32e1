"""Batched text completion from any causal LM checkpoint (left padding, KV cache, stop at EOS, seeded)."""

from __future__ import annotations

import torch


@torch.no_grad()
def complete(model, tokenizer, texts: list[str], max_new_tokens: int = 48, do_sample: bool = False,
             temperature: float = 1.0, seed: int = 0, batch_size: int = 32, add_bos: bool = True) -> list[str]:
    """Continue each raw text (no chat template); returns the decoded continuations, special tokens dropped."""
    was_training = model.training
    model.eval()
    prefix = [tokenizer.bos_token_id] if add_bos else []
    out: list[str] = []
    for i in range(0, len(texts), batch_size):
        rows = [prefix + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[i:i + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        torch.manual_seed(seed + i)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature if do_sample else None, top_k=None, top_p=None,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        out.extend(tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    model.train(was_training)
    return out
