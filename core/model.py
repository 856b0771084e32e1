"""Building Llama-style causal LMs from a config, and saving/loading them as plain HF checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import UserError


@dataclass
class ModelConfig:
    """A Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_seq_len: int = 256            # context length (RoPE positions)
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    pad_vocab_to: int = 64            # embedding rows rounded up to a multiple of this (906 -> 960: ~10-20 % faster steps here)

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise UserError(f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads={self.num_heads}")
        if self.pad_vocab_to < 1:
            raise UserError(f"model.pad_vocab_to must be >= 1, got {self.pad_vocab_to}")
        if self.num_heads % self.num_kv_heads:
            raise UserError(f"model.num_heads={self.num_heads} must be divisible by model.num_kv_heads={self.num_kv_heads}")


def build_model(cfg: ModelConfig, tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    # Rows past len(tokenizer) are never targets, so training drives their logits down; they only
    # make the matmul shapes friendlier.
    vocab = -(-len(tokenizer) // cfg.pad_vocab_to) * cfg.pad_vocab_to
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_seq_len, rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model, tokenizer, out: str | Path) -> None:
    """Write a checkpoint that stock `AutoModelForCausalLM` / `AutoTokenizer` load with no project code."""
    from transformers import GenerationConfig
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=64)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{path}: no model checkpoint here (config.json missing); run the stage that writes it")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


def to_inference_device(model):
    """The model on this process's GPU in bf16 when there is one (LOCAL_RANK under a launcher), else on the
    CPU with the numerics of `for_inference`: for the stages that only run a model (seed, arena, eval, judges,
    the reward model in PPO). bf16 halves the memory, so that `make eval` holds SFT, one other model and a judge
    at 7-8B."""
    if torch.cuda.is_available():
        import os
        return model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), dtype=torch.bfloat16)
    return for_inference(model)


def own_forward(model):
    """Give the model its class's own forward back: trainers leave theirs on the instance (accelerate's bf16
    autocast, TRL's fused LM head), and they outlive the training loop."""
    for attr in ("forward", "_original_forward"):
        vars(model).pop(attr, None)
    return model


def for_inference(model):
    """On a CPU, the numerics every stage answers prompts with: fp32, SDPA attention, and the linear kernel the
    probe found faster for inference (core/precision.py; bf16 is left out, since it changes greedy answers).
    A training stage whose numerics differ (bf16 autocast, which accelerate leaves on the forward of a model it
    prepared, eager attention, oneDNN where MKL answers faster) switches its
    models back before they answer, so that its own comparison with SFT and the report card's give the same
    answers (and share them through core/answer_cache.py). A no-op on a GPU."""
    if next(model.parameters()).device.type != "cpu":
        return model
    own_forward(model)
    from core.onednn import use_onednn_linear
    from core.precision import inference_kernel
    use_onednn_linear(model, on=inference_kernel(model) == "fp32-onednn")
    if model.config._attn_implementation != "sdpa":
        model.set_attn_implementation("sdpa")
    return model


def context_length(path: str | Path) -> int:
    """The checkpoint's context in tokens (max_position_embeddings; a hub config may call it n_positions)."""
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(str(path))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    raise UserError(f"{path}: config.json names no context length (max_position_embeddings)")
