"""Knobs of the labeling app and its commands (configs/<scale>/label.yaml); paths come from the Makefile."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.annotator import PERSONAS
from core.config import UserError


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
    active_sampling: bool = False      # true: smallest reward-model margin first (when items are scored)
    lease_s: float = 1800.0            # an assigned item is reserved this long for its annotator
    concurrency: int = 32              # submits handled at once (SQLite serialises the writes themselves)


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


@dataclass
class ExportSettings:
    test_fraction: float = 0.1
    min_agreement: float = 0.5         # drop pairs whose majority is weaker than this

    def validate(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise UserError(f"export.test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class LabelConfig:
    seed: SeedSettings = field(default_factory=SeedSettings)
    app: AppSettings = field(default_factory=AppSettings)
    auto: AutoSettings = field(default_factory=AutoSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
