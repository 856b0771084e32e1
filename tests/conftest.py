"""Shared fixtures: a micro world and a tokenizer trained on it (seconds, built locally, no hub)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from core.world import WorldConfig, corpus  # noqa: E402

MICRO_WORLD = WorldConfig(corpus_chars=400_000, heldout_corpus_chars=30_000, n_prompts=400)


@pytest.fixture(scope="session")
def micro_world() -> WorldConfig:
    return MICRO_WORLD


@pytest.fixture(scope="session")
def tokenizer():
    from core.tokenizer import train_tokenizer
    return train_tokenizer(list(corpus(MICRO_WORLD)), vocab_size=1024)
