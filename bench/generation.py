"""Benchmark: generation speed in each numerics path, and whether greedy answers stay those of fp32.

Run:    make bench      (python -m bench.generation [--model runs/tiny/sft/model] [--prompts ...] [--n 64])

Greedy chat replies to the first n held-out prompts (the SFT checkpoint when `make all` has run, else
a freshly initialised model of the tiny default's shape, whose speed means the same but whose answers
do not), batched 32 at a time with the KV cache, as seeding, PPO rollouts and evaluation generate:
  fp32          torch's default matmul (MKL)
  fp32-onednn   the linear layers through oneDNN (core/onednn.py)
  bf16          under bf16 autocast, only where the CPU has AMX or avx512_bf16 (else emulated, ~100x slower)
The table gives tokens/s and the share of answers identical to fp32's. Inference on CPU runs the
fp32 kernel the training probe picked for the shape (core.precision.inference_numerics); bf16 is
left to the GPU, where `to_inference_device` casts the weights, because it changes answers.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from core.data import load_rows
from core.generation import Decoding, chat
from core.model import ModelConfig, build_model, load_causal_lm
from core.onednn import use_onednn_linear
from core.precision import candidates, cpu_name
from core.tokenizer import load_tokenizer


def run(path: str, model_dir: Path | None, tok, prompts: list[list[dict]], max_new_tokens: int) -> tuple[float, list[str]]:
    model = (load_causal_lm(model_dir) if model_dir else build_model(ModelConfig(), tok, seed=0)).eval()
    if path == "fp32-onednn":
        use_onednn_linear(model)
    dec = Decoding(max_new_tokens=max_new_tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path == "bf16"):
        chat(model, tok, prompts[:4], dec)  # warm-up
        t = time.perf_counter()
        comps = chat(model, tok, prompts, dec)
        dt = time.perf_counter() - t
    return sum(len(c.token_ids) for c in comps) / dt, [c.text for c in comps]


def main() -> None:
    ap = argparse.ArgumentParser(description="generation speed per numerics path")
    ap.add_argument("--model", default="runs/tiny/sft/model")
    ap.add_argument("--prompts", default="runs/tiny/world/prompts_heldout.jsonl")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    model_dir = Path(args.model) if (Path(args.model) / "config.json").is_file() else None
    if model_dir is None or not Path(args.prompts).is_file():
        print(f"(no {args.model} or {args.prompts}: run `make all` first for the SFT model's answers)")
        return
    tok = load_tokenizer(model_dir)
    prompts = [r["messages"] for r in load_rows(args.prompts)[: args.n]]
    paths = candidates()  # bf16 only where it is native
    results = {p: run(p, model_dir, tok, prompts, args.max_new_tokens) for p in paths}
    print(f"\nGreedy generation on {cpu_name()}, {os.cpu_count()} threads: {len(prompts)} held-out prompts, "
          f"{args.max_new_tokens} new tokens at most, batches of 32, {model_dir}")
    print(f"| {'path':<12} | {'tokens/s':>9} | {'vs fp32':>7} | {'answers as fp32':>15} |")
    print(f"|{'-' * 14}|{'-' * 11}|{'-' * 9}|{'-' * 17}|")
    base_rate, base_texts = results["fp32"]
    for p, (rate, texts) in results.items():
        same = sum(a == b for a, b in zip(texts, base_texts))
        print(f"| {p:<12} | {rate:>9,.0f} | {rate / base_rate:>6.2f}x | {same:>7} / {len(texts):<5} |")


if __name__ == "__main__":
    main()
