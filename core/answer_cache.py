"""Answers a model already gave, kept on disk, so that a chain generates each model's answers once.

In `make all` the reward stage's best-of-n baseline, DPO's and PPO's own comparison with SFT and the
report card each need SFT's answers to the same held-out prompts with the same seeds, and the report
needs the DPO and PPO answers their stages already generated: the same work three or four times over.
The Makefile points ANSWER_CACHE at $(RUNS)/answers; without it (tests, a stage run by hand) nothing is
cached.

An entry is found by what determines the answers exactly: the weights' bytes (a model trained in memory
and the checkpoint saved from it share entries), the numerics it runs with (attention, linear kernel,
dtype, threads, torch), the tokenizer's vocabulary, the prompts' token ids, the decoding, the row seeds, and
the generation code itself. A hit is therefore the answer the model would give again, bit for bit: a test
checks it. Only CPU models are cached: hashing a GPU model's weights would cost more than its answers. Nor
is a model with a forward of its own (a trainer's wrapper, such as accelerate's bf16 autocast):
core.model.for_inference takes those off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from core.generation import Completion

ENV = "ANSWER_CACHE"
CODE = [Path(__file__), Path(__file__).with_name("generation.py"), Path(__file__).with_name("compare.py")]


def folder() -> Path | None:
    return Path(os.environ[ENV]) if os.environ.get(ENV) else None


def key(model, tokenizer, prompt_ids: list[list[int]], decoding, row_seeds: list[int]) -> str | None:
    """The entry's name, or None when this model is not cached (no ANSWER_CACHE, or not on the CPU)."""
    if folder() is None or any(p.device.type != "cpu" for p in model.parameters()):
        return None
    if "forward" in vars(model):  # a forward put on the instance (a trainer's wrapper) does what the key cannot see
        return None
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    kernels = sorted({type(m).__name__ for m in model.modules()})
    h.update(json.dumps([model.config._attn_implementation, kernels, torch.get_num_threads(), torch.__version__,
                         sorted(tokenizer.get_vocab().items()), tokenizer.eos_token_id, tokenizer.pad_token_id,
                         prompt_ids, str(decoding), row_seeds]).encode())
    for f in CODE:
        h.update(f.read_bytes())
    return h.hexdigest()[:32]


def load(name: str | None) -> list[Completion] | None:
    if name is None:
        return None
    try:
        rows = json.loads((folder() / f"{name}.json").read_text())
        return [Completion(**r) for r in rows]
    except (OSError, ValueError, TypeError):  # missing, or a damaged file: generate again and overwrite it
        return None


def store(name: str | None, completions: list[Completion]) -> None:
    if name is None:
        return
    root = folder()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=root, suffix=".tmp", delete=False) as f:
        json.dump([c.__dict__ for c in completions], f)
    os.replace(f.name, root / f"{name}.json")  # never a half-written entry, even with stages running side by side
