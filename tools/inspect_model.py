"""Inspect a checkpoint in the terminal: the Playground tab's panels as text.

Run:    make inspect STAGE=sft TEXT="Tom went to the" [ARGS="--chat --temperature 0.7 --top-p 0.9 --steps 5"]
        python -m tools.inspect_model --model runs/tiny/sft/model --text "What is 3 plus 4?" --chat \
            [--continuation " 3 plus 4 is 7."] [--compare runs/tiny/dpo/model] [--token " park"]

Prints the tokens, the next-token distribution (model and decoder), `--steps N` tokens appended
one at a time, the nearest tokens of `--token` by embedding, the per-token loss of
`--continuation`, and with `--compare` the second checkpoint's distribution on the same context.
"""

from __future__ import annotations

import argparse
import sys

from core.config import UserError
from core.generation import Decoding
from core.lens import Lens, NextToken, check_comparable, kl


def pct(p: float) -> str:
    return f"{100 * p:8.3f} %"


def print_next(lens: Lens, nt: NextToken, rows: int) -> None:
    print(f"  {'#':>3}  {'token':<14} {'id':>5}  {'p model':>10}  {'p decoder':>10}")
    for rank, t in enumerate(nt.top(rows), 1):
        mark = "  <- greedy" if t == nt.greedy else ""
        print(f"  {rank:>3}  {lens.piece(t)!r:<14} {t:>5}  {pct(float(nt.p_model[t]))}  "
              f"{pct(float(nt.p_sampler[t]))}{mark}")
    kept = nt.kept
    print(f"  decoder ({nt.decoding}) keeps {int(kept.sum())} of {len(kept)} tokens, "
          f"{100 * float(nt.p_model[kept].sum()):.1f} % of the model's mass; entropy {nt.entropy:.3f} nats")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (e.g. runs/tiny/sft/model)")
    ap.add_argument("--text", required=True, help="the context")
    ap.add_argument("--chat", action="store_true", help="wrap the text as a user turn in the chat template")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=0, help="0 = off")
    ap.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    ap.add_argument("--rows", type=int, default=10, help="most likely tokens shown")
    ap.add_argument("--steps", type=int, default=0, help="append this many tokens, one at a time, with the decoding")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token", help="show the nearest tokens of this one (its text or id) by embedding")
    ap.add_argument("--continuation", help="print the per-token loss of this text after the context")
    ap.add_argument("--compare", metavar="MODEL", help="a second checkpoint (same tokenizer) on the same context")
    args = ap.parse_args(argv)
    from transformers.utils import logging
    logging.disable_progress_bar()  # a "Loading weights" bar would bury the one-line errors
    try:
        dec = Decoding(args.temperature, args.top_k, args.top_p)
        dec.validate()
        lens = Lens(args.model)
        other = Lens(args.compare) if args.compare else None
        if other:
            check_comparable(lens, other)
        ctx = lens.encode(args.text, args.chat)
        print(f"{len(ctx)} tokens: " + " ".join(f"{lens.piece(t)!r}:{t}" for t in ctx))

        ids = list(ctx)
        for step in range(args.steps + 1):
            nt = lens.next_token(ids, dec)
            print(f"\nnext token after {lens.tokenizer.decode(ids[len(ctx):])!r} (step {step}):" if step
                  else "\nnext token:")
            print_next(lens, nt, args.rows)
            if step < args.steps:
                ids.append(lens.step(ids, dec, args.seed))

        if other:
            a, b = lens.next_token(ctx), other.next_token(ctx)
            print(f"\ncompare with {args.compare} (model distributions, T = 1): "
                  f"KL(a||b) = {kl(a.p_model, b.p_model):.4f} nats, KL(b||a) = {kl(b.p_model, a.p_model):.4f} nats")
            print_next(other, b, args.rows)

        if args.token:
            t = lens.token_id(args.token)
            print(f"\nnearest tokens of {lens.piece(t)!r} ({t}) by cosine similarity of embeddings:")
            for n, s in lens.neighbours(t):
                print(f"  {lens.piece(n)!r:<14} {n:>5}  {s:.3f}")

        if args.continuation:
            cl = lens.loss(ctx, lens.encode_reply(args.text, args.continuation, args.chat))
            print(f"\nloss of the continuation, token by token:\n  {'token':<14} {'id':>5}  {'p':>10}  {'-log p':>7}")
            for t in cl.tokens:
                print(f"  {t.piece!r:<14} {t.token_id:>5}  {pct(t.p)}  {t.nll:7.3f}")
            print(f"  mean -log p (cross-entropy) {cl.mean_nll:.4f} nats, perplexity {cl.perplexity:.2f}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
