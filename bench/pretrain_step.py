"""Benchmark: the pretraining step's speed against a plain eager loop and a minimal GPT training loop.

Run:    make bench      (python -m bench.pretrain_step [--steps 8] [--sizes 192x4,256x6])

For each model size (batch 16 x 256 tokens, all cores) these loops train on random token ids:
  proj-<p>   the pretrain stage's own step (pretrain.train.train_step: compiled loss, fused AdamW, deterministic
             kernels, through accelerate's Accelerator, one process, tcmalloc when the Makefile found it) in
             each numerics path p this CPU runs natively: fp32 (MKL), fp32-onednn, bf16 (core/precision.py). The one
             the stage's probe picks (train.precision: auto) is marked "<- picked": that is what
             `make pretrain` runs
  proj-libc  the picked path with the stock allocator (shown only when tcmalloc is used)
  eager      the same Llama model in a plain loop: fp32, no compile, torch's default (unfused) AdamW
  nanogpt    a minimal GPT training loop written here (learned positions, LayerNorm, GELU MLP, fused
             QKV, SDPA attention, tied head) of the same width, depth and FLOPs: fp32 eager, default AdamW,
             as nanoGPT runs on a CPU (no autocast there)
  nanogpt-c  the same, its loss torch.compile'd
Each variant runs in its own process (allocator state from one distorts the next), and the
variants are interleaved over several rounds; the table shows each one's median. The machine's
matmul GFLOP/s (fp32 by MKL and oneDNN; bf16) is measured before and after, because these machines
are shared: compare the ratios within one run, not absolute numbers across runs.
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

from core.precision import candidates, choose, cpu_flags, cpu_has_bf16, cpu_name

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


def matmul_gflops(n: int = 1024, reps: int = 20) -> dict[str, float]:
    """GFLOP/s of an n x n matmul: fp32 by torch.matmul (MKL) and by oneDNN, bf16 (emulated without AMX /
    avx512_bf16, so only a few reps there)."""
    from core.onednn import matmul_nt
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = {}
    for name, mm, x, y, r in (("fp32 MKL", torch.matmul, a, b, reps), ("fp32 oneDNN", matmul_nt, a, b, reps),
                              ("bf16", torch.matmul, a.bfloat16(), b.bfloat16(), reps if cpu_has_bf16() else 1)):
        mm(x, y)
        t = time.perf_counter()
        for _ in range(r):
            mm(x, y)
        out[name] = 2 * n ** 3 * r / (time.perf_counter() - t) / 1e9
    return out


def flops_per_token(n_params_matmul: int, layers: int, d: int) -> float:
    # 6N for the weight matmuls (forward + backward) plus attention scores/values (PaLM appendix B).
    return 6 * n_params_matmul + 12 * layers * d * SEQ


class _Tok:  # build_model only needs the vocabulary size and special ids
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self):
        return VOCAB


def bench_model(d: int, layers: int):
    from core.model import ModelConfig, build_model
    heads = max(2, d // 64)
    return build_model(ModelConfig(hidden_size=d, intermediate_size=int(8 * d / 3) // 32 * 32, num_layers=layers,
                                   num_heads=heads, num_kv_heads=heads, max_seq_len=SEQ + 1), _Tok())


def run_variant(variant: str, d: int, layers: int, steps: int, warmup: int) -> dict:
    from pretrain.train import TrainConfig, lm_loss, make_optimizer, train_step

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    heads = max(2, d // 64)
    accelerator = None
    if variant.startswith("nanogpt"):
        model = NanoGPT(VOCAB, d, layers, heads, SEQ + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def loss_fn(m, block):
            return F.cross_entropy(m(block[:, :-1]).flatten(0, 1), block[:, 1:].flatten())
        if variant == "nanogpt-c":
            loss_fn = torch.compile(loss_fn)
        embed = model.wte.weight.numel() + model.wpe.weight.numel()
        matmul_params = sum(p.numel() for p in model.parameters()) - embed + model.wte.weight.numel()
    else:
        model = bench_model(d, layers)
        if variant.startswith("proj"):
            from accelerate import Accelerator

            from core.precision import apply
            tc = TrainConfig()  # the stage's defaults: compile + fused AdamW, deterministic
            torch.use_deterministic_algorithms(tc.deterministic, warn_only=True)
            numerics = apply(variant.removeprefix("proj-"), model, compiled=tc.compile)
            accelerator = Accelerator(cpu=True, mixed_precision="bf16" if numerics.bf16 else "no")
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
    ap.add_argument("--sizes", default="192x4,256x6", help="comma list of <hidden>x<layers>")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
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
    paths = candidates()  # bf16 only where it is native
    picked = {}
    for size in args.sizes.split(","):  # what the stage's probe picks at each shape (it caches per shape)
        d, layers = map(int, size.split("x"))
        picked[f"d{d} L{layers}"] = choose("auto", bench_model(d, layers).config).precision
    runs: dict[tuple[str, str], list[dict]] = {}
    variants = ["eager", *(f"proj-{p}" for p in paths), *(["proj-libc"] if args.tcmalloc else []), "nanogpt", "nanogpt-c"]
    for r in range(args.rounds):
        for size in args.sizes.split(","):
            for variant in variants:
                env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
                if variant.startswith("proj-") and variant != "proj-libc" and args.tcmalloc:
                    env["LD_PRELOAD"] = args.tcmalloc
                d, layers = map(int, size.split("x"))
                run_as = f"proj-{picked[f'd{d} L{layers}']}" if variant == "proj-libc" else variant
                out = subprocess.run([sys.executable, "-m", "bench.pretrain_step", "--variant", run_as, "--sizes", size,
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

    flags = sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()})
    print(f"\nPretraining step on {cpu_name()} ({', '.join(flags)}), batch {BATCH} x {SEQ} tokens, "
          f"{os.cpu_count()} threads, vocab {VOCAB}")
    print(f"median of {args.rounds} interleaved rounds; warm-up = first {args.warmup} steps incl. compile (worst round)")
    print("matmul 1024^2, GFLOP/s before / after: " + "; ".join(f"{k} {before[k]:.0f} / {after[k]:.0f}" for k in before))
    print("(compare ratios within one run: these machines are shared, and absolute rates move with the neighbours)\n")
    head = (f"| {'size':<8} | {'variant':<22} | {'params':>9} | {'tokens/s':>9} | {'GFLOP/s':>8} | {'ms/step':>8} | "
            f"{'warm-up s':>9} | {'vs eager':>8} | {'vs nanogpt':>10} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        same = {x["variant"]: x["tok_s"] for x in rows if x["size"] == r["size"]}
        name = r["variant"] + ("  <- picked" if r["variant"] == f"proj-{picked[r['size']]}" else "")
        nano = max(same["nanogpt"], same["nanogpt-c"])
        print(f"| {r['size']:<8} | {name:<22} | {r['params']:>9,} | {r['tok_s']:>9,.0f} | {r['gflops']:>8.1f} | "
              f"{r['step_ms']:>8.0f} | {r['warmup_s']:>9.1f} | {r['tok_s'] / same['eager']:>7.2f}x | "
              f"{r['tok_s'] / nano:>9.2f}x |")
    print(f"\nproject allocator: {'tcmalloc (' + args.tcmalloc + ')' if args.tcmalloc else 'stock (tcmalloc not found)'}; "
          "vs nanogpt = against the faster of nanogpt and nanogpt-c")
    for size, p in picked.items():  # sizes as the rows name them
        best = {x["variant"]: x["tok_s"] for x in rows if x["size"] == size}
        ratio = best[f"proj-{p}"] / max(best["nanogpt"], best["nanogpt-c"])
        print(f"goal at {size}: the picked step ({p}) >= 1.1x the minimal GPT loop: {ratio:.2f}x "
              f"{'met' if ratio >= 1.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
