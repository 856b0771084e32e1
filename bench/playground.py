"""Benchmark: how long each Playground interaction takes, through the app as a browser calls it.

Run:    make bench-playground   (python -m bench.playground --config configs/tiny/label.yaml
                                 --model sft=runs/tiny/sft/model [--model dpo=runs/tiny/dpo/model] [--repeats 20])

The app runs as its own process (as `make label` starts it) on a temporary store; one logged-in
session speaks the browser's protocol (bench.label.BrowserSession) and times each kind of click
from request to the rendered HTML coming back: p50 / p95 over --repeats calls (goal: well under
a second each). A new context costs a forward pass; moving a slider re-uses the cached logits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.label import BrowserSession, serve_app
from labeling_ui.playground import DEFAULT_CONTEXT
from labeling_ui.store import Store


def timed(sess: BrowserSession, api: str, make_data, repeats: int) -> tuple[float, float]:
    times = []
    for i in range(repeats):
        data = make_data(i)
        t0 = time.perf_counter()
        out = sess.call(api, data)
        times.append(time.perf_counter() - t0)
        if out is None:
            raise RuntimeError(f"{api} returned no output")
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def measure(cfg_path: str, models: list[str], repeats: int) -> list[tuple[str, float, float]]:
    names = [m.partition("=")[0] for m in models]
    a = "sft" if "sft" in names else names[0]                     # the checkpoint people inspect most
    others = [n for n in names if n != a]
    b = "dpo" if "dpo" in others else (others[0] if others else "(none)")
    db = Path(tempfile.mkdtemp(prefix="bench-playground-")) / "labels.db"
    Store(db).add_annotator("boss", "boss-password", "admin")
    args = [x for m in models for x in ("--model", m)]

    def view(i: int, other: str = "(none)", temperature: float = 1.0, text: str = DEFAULT_CONTEXT) -> list:
        return [a, other, False, text, None, temperature, 0, 1.0, 10]

    rows = []
    with serve_app(cfg_path, db, *args) as (url, _):
        sess = BrowserSession(url, "boss", "boss-password")
        t0 = time.perf_counter()
        sess.call("playground_redraw", view(0))
        rows.append((f"first open (loads {a})", 1000 * (time.perf_counter() - t0), float("nan")))
        cases = [
            ("new context (tokenize + forward)", "playground_reset",
             lambda i: [a, "(none)", False, f"{DEFAULT_CONTEXT} {i}", 1.0, 0, 1.0, 10]),
            ("move temperature slider", "playground_redraw", lambda i: view(i, temperature=0.1 + 0.05 * i)),
            ("step: greedy token", "playground_step_greedy", lambda i: [*view(i), 0]),
            ("step: sampled token", "playground_step_sample", lambda i: [*view(i, temperature=0.8), i]),
            ("generate 32 tokens", "playground_generate", lambda i: [*view(i, temperature=0.8), i, 32]),
            ("nearest tokens (embeddings)", "playground_neighbours", lambda i: [a, False, DEFAULT_CONTEXT, None, str(i + 10)]),
            ("loss of a continuation", "playground_loss",
             lambda i: [a, False, DEFAULT_CONTEXT, None, f" a dog. Tom and the dog played {i} times."]),
        ]
        if b != "(none)":
            cases.append((f"compare {a} vs {b}", "playground_redraw", lambda i: view(i, other=b, temperature=0.1 + 0.05 * i)))
        for label, api, make in cases:
            sess.call("playground_reset", [a, "(none)", False, DEFAULT_CONTEXT, 1.0, 0, 1.0, 10])
            rows.append((label, *timed(sess, api, make, repeats)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="configs/<scale>/label.yaml")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                    help="checkpoints; sft (else the first) is timed, compared with dpo (else the next)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    rows = measure(args.config, args.model, args.repeats)
    print(f"Playground interactions on {', '.join(args.model)}\n(one browser session; ms from click to rendered answer)")
    print(f"  {'interaction':<38} {'p50 ms':>8} {'p95 ms':>8}")
    for label, p50, p95 in rows:
        print(f"  {label:<38} {p50:>8.1f} {p95:>8.1f}".replace("nan", "  -"))


if __name__ == "__main__":
    main()
