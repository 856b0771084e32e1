"""Knobs of the labeling app and its commands (configs/<scale>/label.yaml); paths come from the Makefile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.annotator import PERSONAS
from core.config import UserError
from core.data import PromptSource
from core.judges import JudgeSettings
from labeling_ui.store import LoginPolicy


@dataclass
class DecodingSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class SeedSettings:
    k: int = 4                         # candidates per prompt
    prompts: int = 300                 # first N training prompts (0 = all)
    max_new_tokens: int = 48
    # candidate j uses decodings[j % len]; each candidate's seed is derived from (seed, prompt id, j)
    decodings: list[DecodingSettings] = field(default_factory=lambda: [
        DecodingSettings(0.7), DecodingSettings(1.0), DecodingSettings(1.0, top_p=0.9), DecodingSettings(1.3, top_k=20)])
    seed: int = 0
    batch_size: int = 64
    rank_fraction: float = 0.5         # share of prompts judged by ranking all k; the rest as one pair
    overlap: int = 3                   # annotators per item (max judgments)

    def validate(self) -> None:
        if self.k < 2 or not self.decodings or self.overlap < 1 or self.max_new_tokens < 1:
            raise UserError("seed: need k >= 2, at least one decoding, overlap >= 1 and max_new_tokens >= 1")
        if not 0.0 <= self.rank_fraction <= 1.0:
            raise UserError(f"seed.rank_fraction must be in [0, 1], got {self.rank_fraction}")


@dataclass
class AppSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    active_sampling: bool = False      # true: items an RM ensemble disagrees on first (reward ensemble > 1), else smallest margin
    lease_s: float = 1800.0            # an assigned item is reserved this long for its annotator
    concurrency: int = 32              # submits handled at once (SQLite serialises the writes themselves)
    login: LoginPolicy = field(default_factory=LoginPolicy)  # throttled logins: waits, then a lock (labeling_ui/store.py)
    session_idle_s: float = 43200.0    # a session with no request for this long ends (the browser asks to log in again)
    busy_timeout_s: float = 30.0       # a write waits this long for another process's SQLite write lock, then "Not saved"

    def validate(self) -> None:
        if min(self.session_idle_s, self.lease_s, self.busy_timeout_s) <= 0 or self.concurrency < 1:
            raise UserError("app: need session_idle_s > 0, lease_s > 0, busy_timeout_s > 0 and concurrency >= 1")


@dataclass
class AutoAnnotator:
    persona: str = "strict"
    noise: float = 0.5

    def validate(self) -> None:
        if self.persona not in PERSONAS:
            raise UserError(f"auto.annotators: unknown persona {self.persona!r}; choose one of {', '.join(PERSONAS)}")


@dataclass
class AutoSettings:
    annotators: list[AutoAnnotator] = field(default_factory=lambda: [
        AutoAnnotator("strict", 0.5), AutoAnnotator("strict", 1.0), AutoAnnotator("stylist", 0.5)])
    correction_rate: float = 0.5       # share of both-bad / all-flawed items the scripted annotator corrects
    seed: int = 0
    # Who labels in `make label-auto` and votes in `make arena-auto`: scripted = the personas above (world
    # prompts only); reward_model / llm = one judge (core.judges) for any prompt set, as annotator "auto-<kind>".
    judge: JudgeSettings = field(default_factory=JudgeSettings)


@dataclass
class ExportSettings:
    test_fraction: float = 0.1
    min_agreement: float = 0.5         # drop pairs whose majority is weaker than this

    def validate(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise UserError(f"export.test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class ArenaSettings:
    per_task: int = 25                 # held-out prompts per task that every model answers (4 tasks: 100)
    temperature: float = 0.7           # the answers' decoding (0 = greedy)
    max_new_tokens: int = 64
    seed: int = 0
    auto_votes: int = 0                # votes per scripted annotator in `make arena-auto` (0 = every match)

    def validate(self) -> None:
        if self.per_task < 1 or self.max_new_tokens < 1 or self.auto_votes < 0 or self.temperature < 0:
            raise UserError("arena: need per_task >= 1, max_new_tokens >= 1, auto_votes >= 0, temperature >= 0")


def named_checkpoints(spec: list[str]) -> dict[str, str]:
    """["sft=runs/tiny/sft/model", ...] -> {"sft": "runs/tiny/sft/model", ...}; each must be a checkpoint."""
    out = {}
    for arg in spec:
        name, sep, path = arg.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{arg!r}: expected NAME=PATH, e.g. sft=runs/tiny/sft/model")
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{arg}: no checkpoint at {path} (config.json missing); run the stage that writes it")
        out[name] = path
    return out


@dataclass
class LabelConfig:
    seed: SeedSettings = field(default_factory=SeedSettings)
    prompt_source: PromptSource = field(default_factory=PromptSource)  # which columns of --prompts hold what
    app: AppSettings = field(default_factory=AppSettings)
    auto: AutoSettings = field(default_factory=AutoSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    arena: ArenaSettings = field(default_factory=ArenaSettings)
