"""The artifact contract every stage keeps (see the README, "Artifacts").

runs/<scale>/<stage>/
  model/         Hugging Face checkpoint (safetensors, config, tokenizer + chat template)
  config.yaml    the fully resolved config, plus the inputs' paths and hashes
  metrics.json   the stage's figures
  logs/          tensorboard events
  DONE           written last, only after success

`StageDir.start()` removes a stale DONE before any work, so a crashed rerun is never marked done;
`StageDir.finish()` writes metrics.json and then DONE. All writes go through a temp file + rename,
so a reader never sees half a file. Under a multi-process launch every process calls both; only the
main process writes, and `start` returns on every process once it has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from core import distributed
from core.config import to_dict


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def code_sha256(stage_file: str | Path) -> str:
    """Digest of a stage's source file and the core library it builds on."""
    h = hashlib.sha256()
    for f in [Path(stage_file), *sorted(Path(__file__).parent.glob("*.py"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


BOTH_WAYS = "both"  # the control run of `make bench-control` on every training pair written both ways


def control_runs(control: str | Path) -> list[tuple[str, Path]]:
    """The shuffled-label control runs of `make bench-control`, one folder per shuffle (<control>/<shuffle>), in order."""
    control = Path(control)
    found = [d for d in control.iterdir() if d.is_dir() and d.name.isdigit()] if control.is_dir() else []
    return [(d.name, d) for d in sorted(found, key=lambda d: int(d.name))]


def both_ways_run(control: str | Path) -> Path | None:
    """The control run without any direction (<control>/both: each pair once each way), where there is one."""
    d = Path(control) / BOTH_WAYS
    return d if d.is_dir() else None


class StageDir:
    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.model = self.root / "model"
        self.logs = self.root / "logs"
        self.checkpoints = self.root / "checkpoints"
        self.done = self.root / "DONE"
        self.t0 = time.time()

    def start(self, cfg: Any, inputs: dict[str, str | Path] | None = None, resume_state: tuple[str, ...] = (),
              stage_file: str | Path | None = None) -> None:
        """Begin (or resume) a run: drop any stale DONE, record the resolved config and input hashes.

        `resume_state` names subdirectories a crashed run left for resuming (checkpoints, a trained
        tokenizer). They are kept only if the config, the inputs and the code (`stage_file` and
        core/) are unchanged since they were written; resuming a run made by other settings or
        other code would silently mix two experiments.
        """
        distributed.ensure_initialized()
        if distributed.is_main():
            self._start(cfg, inputs, resume_state, stage_file)
        distributed.barrier()
        self.t0 = time.time()

    def _start(self, cfg, inputs, resume_state, stage_file) -> None:
        self.done.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        record = {"config": to_dict(cfg), "git_commit": git_commit(),
                  "code_sha256": code_sha256(stage_file) if stage_file else None,
                  "inputs": {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in (inputs or {}).items()}}
        fingerprint = hashlib.sha256(json.dumps([record["config"], [v["sha256"] for v in record["inputs"].values()],
                                                 record["code_sha256"]], sort_keys=True).encode()).hexdigest()
        stamp = self.root / "FINGERPRINT"
        if stamp.exists() and stamp.read_text().strip() != fingerprint:
            stale = [d for d in resume_state if (self.root / d).exists()]
            if stale:
                print(f"{self.root}: config or inputs changed since the last run; discarding {', '.join(stale)}")
            for d in stale:
                shutil.rmtree(self.root / d)
        atomic_write_text(stamp, fingerprint + "\n")
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(record, sort_keys=False))

    def finish(self, metrics: dict) -> None:
        if not distributed.is_main():
            return
        metrics = {**metrics, "wall_time_s": round(time.time() - self.t0, 2)}
        write_json(self.root / "metrics.json", metrics)
        atomic_write_text(self.done, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
