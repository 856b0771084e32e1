"""Benchmark: the labeling app under 20 concurrent annotators, and the cost of seeding one prompt.

Run:    make bench-label      (python -m bench.label --config configs/tiny/label.yaml --model runs/tiny/sft/model
                               [--annotators 20] [--seconds 15])

1. Submit latency: the app runs as its own process (as `make label` starts it) on a temporary store;
   N annotator threads submit pairwise judgments as fast as the app answers, each logged in as its
   own annotator. One submit = the browser's own call: store the judgment (one durable transaction)
   and load the next item. Clients: the browser's protocol (queue/join + server-sent events, spoken
   with httpx), paced (each annotator reads for 0.5-1.5 s between submits: 20 such annotators offer
   ~20 judgments/s, several times what 20 people produce) and flat out (no reading time: the
   saturation throughput); and gradio_client flat out, which adds its own polling delay per call.
   Prints p50 / p95 / p99 latency, judgments/s and the app's CPU per submit (goal: p95 < 250 ms).
   Every row runs on a SQLite store and on PostgreSQL (a throwaway local server, tools/pg_local.py),
   and PostgreSQL once more with the annotators split over two app processes (the team set-up).
   Clients, app(s) and database share this machine's cores.
2. Seeding: k candidates x max_new_tokens for one prompt with the model given (the seed stage's
   own call, one decoding per candidate), median of several runs (goal: < 1.5 s for 4 x 48 tokens).
   Also with an untrained model of the same shape, which never stops early, so all 48 tokens are paid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import torch

from core.config import load_config
from core.generation import Decoding, chat
from labeling_ui.config import LabelConfig
from labeling_ui.store import Store
from tools.pg_local import PostgresMissing, local_postgres

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops() -> float:
    a = torch.randn(1024, 1024)
    a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def _fill(db: Path | str, annotators: int, items: int) -> None:
    store = Store(db)
    store.add_annotator("boss", "boss-password", "admin")
    for i in range(annotators):
        store.add_annotator(f"ann{i:02d}", f"ann{i:02d}-password")
    for i in range(items):
        pid = f"p{i:05d}"
        store.add_prompts([{"id": pid, "messages": [{"role": "user", "content": f"How much is {i} plus 3?"}],
                          "task": "arithmetic", "expected": i + 3}])
        store.add_candidates([{"prompt_id": pid, "text": f"{i} plus 3 is {i + 3 + j}.", "checkpoint": "bench",
                               "checkpoint_sha": "0" * 64, "decoding": {}, "seed": j} for j in range(2)])
        store.add_item(pid, "pair", [c["id"] for c in store.candidates(pid)], 3)


class BrowserSession:
    """One annotator speaking the browser's own protocol: log in (cookie), then for each click
    POST /gradio_api/queue/join and read the server-sent events until that event completes.
    Session state (the current item) lives on the server under the session hash, as for a tab."""

    def __init__(self, url: str, name: str, password: str):
        import httpx
        self.http = httpx.Client(base_url=url, timeout=60)
        if self.http.post("/login", data={"username": name, "password": password}).status_code != 200:
            raise RuntimeError(f"login failed for {name}")
        deps = self.http.get("/config").json()["dependencies"]
        self.fn = {d["api_name"]: i for i, d in enumerate(deps) if d.get("api_name")}
        self.session = uuid.uuid4().hex[:12]

    def call(self, api: str, data: list) -> list:
        r = self.http.post("/gradio_api/queue/join", json={"data": data, "fn_index": self.fn[api], "session_hash":
                                                          self.session, "event_data": None, "trigger_id": None})
        event = r.json()["event_id"]
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed" and msg.get("event_id") == event:
                        return msg["output"]["data"]
        raise RuntimeError(f"{api}: the stream ended before the event completed")


class ClientSession:
    """One annotator through gradio_client (what tests and scripts use); it adds its own polling delay."""

    def __init__(self, url: str, name: str, password: str):
        from gradio_client import Client
        self.client = Client(url, auth=(name, password), verbose=False)

    def call(self, api: str, data: list) -> list:
        return self.client.predict(*data[1:] if api.startswith("vote") else data, api_name=f"/{api}")


@contextlib.contextmanager
def serve_app(cfg_path: str, db: Path, *args: str):
    """`python -m labeling_ui.app` on a free port as its own process (as `make label` starts it); yields (url, pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "labeling_ui.app", "--config", cfg_path, "--db", str(db), *args,
                             f"app.port={port}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def submit_latency(cfg_path: str, db: Path | str, annotators: int, seconds: float, session_cls, think_s: float = 0.0,
                   workers: int = 1) -> dict:
    _fill(db, annotators, items=annotators * 300)
    with contextlib.ExitStack() as apps:
        served = [apps.enter_context(serve_app(cfg_path, db)) for _ in range(workers)]
        pids = [pid for _, pid in served]
        sessions = [session_cls(served[i % workers][0], f"ann{i:02d}", f"ann{i:02d}-password") for i in range(annotators)]
        for sess in sessions:
            sess.call("start", [])
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(annotators)

        def run(sess):
            pause = random.Random(sess.__class__.__name__ + str(id(sess)))
            barrier.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                status = sess.call("vote_a", [None, [], ""])[-1]
                dt = time.perf_counter() - t0
                with lock:
                    (lat.append(dt) if status.startswith("Saved") else errors.append(status))
                if think_s:  # reading time, jittered so annotators do not submit in lockstep
                    time.sleep(think_s * pause.uniform(0.5, 1.5))

        cpu0, t0 = sum(map(_cpu_seconds, pids)), time.perf_counter()
        threads = [threading.Thread(target=run, args=(sess,)) for sess in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server_cpu = sum(map(_cpu_seconds, pids)) - cpu0
        stored = Store(db).counts()["judgments"]
    q = statistics.quantiles(lat, n=100)
    return {"submits": len(lat), "stored": stored, "errors": len(errors), "wall_s": wall,
            "p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000, "p99_ms": q[98] * 1000, "per_s": len(lat) / wall,
            "server_cpu_ms": 1000 * server_cpu / max(1, len(lat))}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seed_seconds(model, tok, cfg: LabelConfig, repeats: int = 5) -> tuple[float, int]:
    s = cfg.seed
    prompt = [[{"role": "user", "content": "Tell me a story about Tom, a dog and the park."}]]
    times, tokens = [], 0
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        tokens = 0
        for j in range(s.k):
            d = s.decodings[j % len(s.decodings)]
            comp = chat(model, tok, prompt, Decoding(d.temperature, d.top_k, d.top_p, s.max_new_tokens), seed=r * 10 + j)
            tokens += len(comp[0].token_ids)
        if r:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny/label.yaml")
    parser.add_argument("--model", default="runs/tiny/sft/model")
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--skip-seed", action="store_true")
    args = parser.parse_args()
    cfg = load_config(LabelConfig, args.config)
    torch.set_num_threads(os.cpu_count() or 1)
    g0 = matmul_gflops()

    print(f"\nSubmit latency: {args.annotators} concurrent annotators -> the app process(es), {args.seconds:g} s each "
          "(a submit = store the judgment + load the next item; goal p95 < 250 ms)")
    print(f"{'store':<10} {'apps':>4}  {'client, pace':<28} {'submits':>8} {'stored':>7} {'errors':>6} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'p99 ms':>8} {'judgments/s':>12} {'app CPU ms/submit':>18}")
    runs = [(b, 1, label, cls, think) for b in ("sqlite", "postgres")
            for label, cls, think in (("browser protocol, 1 s think", BrowserSession, 1.0),
                                      ("browser protocol, no think", BrowserSession, 0.0),
                                      ("gradio_client, no think", ClientSession, 0.0))]
    runs.append(("postgres", 2, "browser protocol, no think", BrowserSession, 0.0))
    tmp = Path(tempfile.mkdtemp(prefix="bench-label-"))
    with contextlib.ExitStack() as stack:
        try:
            pg = stack.enter_context(local_postgres(tmp))
        except PostgresMissing as e:
            print(f"(postgres rows skipped: {e})")
            runs = [r for r in runs if r[0] == "sqlite"]
        for n, (backend, workers, label, cls, think) in enumerate(runs):
            db = tmp / f"labels{n}.db" if backend == "sqlite" else pg.new_database(f"labels{n}")
            r = submit_latency(args.config, db, args.annotators, args.seconds, cls, think, workers)
            print(f"{backend:<10} {workers:>4}  {label:<28} {r['submits']:>8} {r['stored']:>7} {r['errors']:>6} "
                  f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['per_s']:>12.1f} "
                  f"{r['server_cpu_ms']:>18.1f}")
    if args.skip_seed:
        return

    from core.model import ModelConfig, build_model, load_causal_lm
    from core.tokenizer import load_tokenizer
    print(f"\nSeeding one prompt: k={cfg.seed.k} candidates x max_new_tokens={cfg.seed.max_new_tokens} "
          f"(median of 5; goal < 1.5 s)")
    print(f"{'model':<44} {'seconds':>8} {'tokens':>7}")
    if Path(args.model, "config.json").is_file():
        tok, model = load_tokenizer(args.model), load_causal_lm(args.model)
        sec, n = seed_seconds(model, tok, cfg)
        print(f"{args.model + ' (stops at EOS)':<44} {sec:>8.3f} {n:>7}")
        untrained = build_model(ModelConfig(), tok, seed=0)
        sec, n = seed_seconds(untrained, tok, cfg)
        print(f"{'untrained, same shape (no early EOS)':<44} {sec:>8.3f} {n:>7}")
    else:
        print(f"{args.model}: not found; run make sft first to time seeding with the tiny model")
    print(f"\nfp32 1024^2 matmul: {g0:.0f} GFLOP/s before, {matmul_gflops():.0f} after "
          "(a quiet machine gives ~220; lower means a busy neighbour)")


if __name__ == "__main__":
    main()
