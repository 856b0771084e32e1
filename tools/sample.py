"""Sample completions from any stage's checkpoint, with the decoding settings shown.

Run:    make sample STAGE=sft PROMPT="What is 3 plus 4?" [ARGS="--temperature 0.8 --top-k 20 -n 3"]
        python -m tools.sample --model runs/tiny/sft/model --prompt "What is 3 plus 4?" --temperature 0.8 -n 3

A prompt goes through the chat template as one user turn; `--raw` continues the text as it is
(how a base model is prompted: `make sample STAGE=pretrain` uses it). `--show-top K` prints the
K most likely first tokens: p under the model and under the decoder (after temperature, top-k,
top-p); `make inspect` (tools/inspect_model.py) shows more of the model's inside.
"""

from __future__ import annotations

import argparse
import sys

import torch

from core.config import UserError
from core.generation import Decoding, generate
from core.lens import Lens
from tools.inspect_model import print_next


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (e.g. runs/tiny/sft/model)")
    ap.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    ap.add_argument("--raw", action="store_true", help="continue the raw text instead of a chat turn")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    ap.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set reaching p (1 = off)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("-n", type=int, default=1, help="completions per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-top", type=int, default=0, metavar="K", help="print the K most likely first tokens")
    args = ap.parse_args(argv)
    try:
        dec = Decoding(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
        dec.validate()
        if args.n < 1:
            raise UserError(f"-n must be >= 1, got {args.n}")
        lens = Lens(args.model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(2)
    print(f"model: {args.model}\ndecoding: {dec}, seed={args.seed}, {'raw text' if args.raw else 'chat template'}")
    for prompt in args.prompt:
        ids = lens.encode(prompt, chat=not args.raw)
        print(f"\nprompt: {prompt!r}")
        if args.show_top:
            print("first next token:")
            print_next(lens, lens.next_token(ids, dec), args.show_top)
        for j, c in enumerate(generate(lens.model, lens.tokenizer, [ids] * args.n, dec, seed=args.seed)):
            end = "ended with EOS" if c.finished else f"stopped at max_new_tokens={dec.max_new_tokens}"
            print(f"[{j + 1}] {c.text}\n    ({len(c.token_ids)} tokens, {end}, log p = {sum(c.logprobs):.2f})")


if __name__ == "__main__":
    main()
