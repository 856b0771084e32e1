"""The verdict of `make gpu-check`: did every training stage run under every accelerate engine it was given?

Run:    make gpu-check      (on a machine with GPUs; it trains the micro chain once per configs/accelerate file)
        python -m tools.gpu_check runs/gpu-check

Reads <root>/<engine>/<stage>/metrics.json ("distributed", written by core.distributed.in_sync) and prints
one row per engine and stage: the engine the config asked for and the one accelerate ran, the processes,
whether the weights were sharded and whether every rank ended with the same weights. A stage fails when it
did not finish, ran another engine than asked (accelerate falls back to DDP silently), or, under DDP, ended
with ranks out of sync. Exit code 1 on any failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ("pretrain", "sft", "reward", "dpo", "ppo")
ENGINES = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
NOT_UNDER = {"ppo": ("zero2", "zero3")}  # PPO trains two models in its own loop: DDP or FSDP only (README)


def stages(engine: str) -> list[str]:
    return [s for s in STAGES if engine not in NOT_UNDER.get(s, ())]


def check(root: Path) -> list[dict]:
    rows = []
    for name, wanted in ENGINES.items():
        for stage in stages(name):
            d = root / name / stage
            m = json.loads((d / "metrics.json").read_text()) if (d / "DONE").exists() else None
            dist = (m or {}).get("distributed") or {}
            why = ("did not finish" if m is None else
                   f"ran as {dist.get('engine')}" if dist.get("engine") != wanted else
                   "ranks out of sync" if wanted == "MULTI_GPU" and not dist.get("in_sync") else "")
            rows.append({"engine": name, "stage": stage, "asked": dist.get("engine_requested"), "ran": dist.get("engine"),
                         "processes": dist.get("world_size"), "sharded": dist.get("sharded"),
                         "in_sync": dist.get("in_sync"), "ok": not why, "why": why})
    return rows


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:] or ["runs/gpu-check"])[0])
    rows = check(root)
    print(f"{'engine':7} {'stage':9} {'asked':10} {'ran':10} {'procs':>5} {'sharded':>7} {'in sync':>7}  verdict")
    for r in rows:
        print(f"{r['engine']:7} {r['stage']:9} {str(r['asked']):10} {str(r['ran']):10} {str(r['processes']):>5} "
              f"{str(r['sharded']):>7} {str(r['in_sync']):>7}  {'ok' if r['ok'] else 'FAIL: ' + r['why']}")
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} stage runs ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
