"""Benchmark: the pretraining step's speed against a plain eager loop and a hand-written eager GPT.

Run:    make bench      (python -m bench.pretrain_step [--steps 15] [--sizes 128x4,192x4,256x6])

For each model size (batch 16 x 256 tokens, fp32, all cores) these loops train on random token ids:
  project   the pretrain stage's own step as `make pretrain` runs it: pretrain.train.train_step with
            its compiled loss, fused AdamW and oneDNN linear layers (core/onednn.py), through
            accelerate's Accelerator (one process), under tcmalloc when the Makefile found it
  proj-mkl  the same step with the linear layers' matmuls left to torch's default BLAS (MKL)
  proj-libc the same step with the stock allocator (shown only when tcmalloc is used), so each
            lever's share is visible
  eager     the same Llama model in a plain loop: no compile, torch's default (unfused) AdamW
  nanogpt   a hand-written GPT (learned positions, LayerNorm, GELU MLP, SDPA attention) of the same
            width and depth, eager, default AdamW
Each variant runs in its own process (allocator state from one distorts the next), and the
variants are interleaved over several rounds; the table shows each one's median. The machine's
fp32 matmul GFLOP/s (torch.matmul, i.e. MKL, and oneDNN) is measured before and after, because these
machines are shared: compare the ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, SEQ, VOCAB = 16, 256, 2048


class NanoGPT(nn.Module):
    """A plain GPT-2-style decoder, written out by hand as the reference for "eager GPT" speed."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, ctx: int):
        super().__init__()
        self.heads = heads
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(d), "qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(d, d),
            "ln2": nn.LayerNorm(d), "fc": nn.Linear(d, 4 * d), "out": nn.Linear(4 * d, d)}) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).split(x.shape[-1], dim=-1)
            q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            x = x + blk["proj"](y)
            x = x + blk["out"](F.gelu(blk["fc"](blk["ln2"](x))))
        return self.ln_f(x) @ self.wte.weight.T


def matmul_gflops(n: int = 1024, reps: int = 20) -> tuple[float, float]:
    """fp32 GFLOP/s of an n x n matmul by torch.matmul (MKL) and by oneDNN."""
    from core.onednn import matmul_nt
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = []
    for mm in (torch.matmul, matmul_nt):
        for _ in range(3):
            mm(a, b)
        t = time.perf_counter()
        for _ in range(reps):
            mm(a, b)
        out.append(2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return tuple(out)


def flops_per_token(n_params_matmul: int, layers: int, d: int) -> float:
    # 6N for the weight matmuls (forward + backward) plus attention scores/values (PaLM appendix B).
    return 6 * n_params_matmul + 12 * layers * d * SEQ


def run_variant(variant: str, d: int, layers: int, steps: int, warmup: int) -> dict:
    from core.model import ModelConfig, build_model
    from pretrain.train import TrainConfig, lm_loss, make_optimizer, train_step

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    heads = max(2, d // 64)
    accelerator = None
    if variant == "nanogpt":
        model = NanoGPT(VOCAB, d, layers, heads, SEQ + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def loss_fn(m, block):
            return F.cross_entropy(m(block[:, :-1]).flatten(0, 1), block[:, 1:].flatten())
        embed = model.wte.weight.numel() + model.wpe.weight.numel()
        matmul_params = sum(p.numel() for p in model.parameters()) - embed + model.wte.weight.numel()
    else:
        class _Tok:  # build_model only needs the vocabulary size and special ids
            bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

            def __len__(self):
                return VOCAB
        model = build_model(ModelConfig(hidden_size=d, intermediate_size=int(8 * d / 3) // 32 * 32, num_layers=layers,
                                        num_heads=heads, num_kv_heads=heads, max_seq_len=SEQ + 1), _Tok())
        if variant.startswith("proj"):
            from accelerate import Accelerator

            from core.onednn import use_onednn_linear
            tc = TrainConfig()  # the stage's defaults: compile + fused AdamW + oneDNN linear layers
            if tc.onednn_linear and variant != "proj-mkl":
                use_onednn_linear(model)
            accelerator = Accelerator(cpu=True)
            model, opt = accelerator.prepare(model, make_optimizer(model, tc))
            loss_fn = torch.compile(lm_loss) if tc.compile else lm_loss
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            loss_fn = lm_loss
        embed = model.model.embed_tokens.weight.numel()
        matmul_params = sum(p.numel() for p in model.parameters())  # tied: the embedding is the head matmul
    model.train()
    gen = torch.Generator().manual_seed(0)
    times = []
    t_first = time.perf_counter()
    for i in range(warmup + steps):
        batch = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=gen)
        t = time.perf_counter()
        train_step(model, opt, loss_fn, batch, 1.0, accelerator)
        if i == warmup - 1:
            t_first = time.perf_counter() - t_first
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    tok_s = BATCH * SEQ / step_s
    return {"variant": variant, "size": f"d{d} L{layers}", "params": sum(p.numel() for p in model.parameters()),
            "tok_s": tok_s, "gflops": tok_s * flops_per_token(matmul_params, layers, d) / 1e9,
            "step_ms": step_s * 1000, "warmup_s": t_first}


def main() -> None:
    ap = argparse.ArgumentParser(description="pretraining step benchmark")
    ap.add_argument("--sizes", default="128x4,192x4,256x6", help="comma list of <hidden>x<layers>")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tcmalloc", default="", help="path of libtcmalloc_minimal.so.4 for the project variant")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:  # child process: one measurement, printed as JSON
        d, layers = map(int, args.sizes.split("x"))
        print(json.dumps(run_variant(args.variant, d, layers, args.steps, args.warmup)))
        return

    torch.set_num_threads(os.cpu_count())
    before = matmul_gflops()
    runs: dict[tuple[str, str], list[dict]] = {}
    variants = ("eager", "project", "proj-mkl", "proj-libc", "nanogpt") if args.tcmalloc else ("eager", "project", "proj-mkl", "nanogpt")
    for r in range(args.rounds):
        for size in args.sizes.split(","):
            for variant in variants:
                env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
                if variant in ("project", "proj-mkl") and args.tcmalloc:
                    env["LD_PRELOAD"] = args.tcmalloc
                out = subprocess.run([sys.executable, "-m", "bench.pretrain_step", "--variant", variant, "--sizes", size,
                                      "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                     capture_output=True, text=True, check=True, env=env)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((size, variant), []).append({**row, "variant": variant})
                print(f"  round {r + 1}/{args.rounds}: measured {size} {variant}", file=sys.stderr)
    after = matmul_gflops()
    rows = []
    for measured in runs.values():
        median = sorted(measured, key=lambda m: m["tok_s"])[len(measured) // 2]
        rows.append({**median, "warmup_s": max(m["warmup_s"] for m in measured)})

    print(f"\nPretraining step, batch {BATCH} x {SEQ} tokens, fp32, {os.cpu_count()} threads, vocab {VOCAB}")
    print(f"median of {args.rounds} interleaved rounds; warm-up = first {args.warmup} steps incl. compile (worst round)")
    print(f"machine fp32 matmul (1024^2), GFLOP/s: MKL {before[0]:.0f} before, {after[0]:.0f} after; "
          f"oneDNN {before[1]:.0f} before, {after[1]:.0f} after")
    print("(a quiet 2-core box here gives MKL ~200, oneDNN ~400; lower means a busy neighbour)\n")
    head = f"| {'size':<8} | {'variant':<9} | {'params':>9} | {'tokens/s':>9} | {'GFLOP/s':>8} | {'ms/step':>8} | {'warm-up s':>9} | {'vs eager':>8} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        eager = next(x for x in rows if x["size"] == r["size"] and x["variant"] == "eager")
        print(f"| {r['size']:<8} | {r['variant']:<9} | {r['params']:>9,} | {r['tok_s']:>9,.0f} | {r['gflops']:>8.1f} | "
              f"{r['step_ms']:>8.0f} | {r['warmup_s']:>9.1f} | {r['tok_s'] / eager['tok_s']:>7.2f}x |")
    print(f"\nproject allocator: {'tcmalloc (' + args.tcmalloc + ')' if args.tcmalloc else 'stock (tcmalloc not found)'}")
    print("goal: project >= 1.2x eager, and project faster than nanogpt at each size")


if __name__ == "__main__":
    main()
