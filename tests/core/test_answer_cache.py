"""The answer cache: a hit is exactly the answers the model would give again; anything that could change them
(weights, numerics, prompts, decoding, seeds) is another entry; a damaged entry is generated again."""

import types

import pytest
import torch

from core import answer_cache
from core.compare import sample_answers
from core.generation import Decoding
from core.model import ModelConfig, build_model, for_inference

CONVS = [[{"role": "user", "content": f"What is {i} plus 2?"}] for i in range(3)]
HOT = Decoding(1.0, max_new_tokens=6)


@pytest.fixture
def model(tokenizer):
    return build_model(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1),
                       tokenizer, seed=0).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(answer_cache.ENV, str(tmp_path / "answers"))
    return tmp_path / "answers"


def entries(folder) -> int:
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def test_a_hit_is_what_the_model_answers_again_and_is_not_generated(model, tokenizer, cache, monkeypatch):
    fresh = sample_answers(model, tokenizer, CONVS, HOT, seed=1, answers_per_prompt=2)
    assert entries(cache) == 1
    import core.compare
    with monkeypatch.context() as m:
        m.setattr(core.compare, "generate", lambda *a, **k: pytest.fail("a hit must not generate"))
        again = sample_answers(model, tokenizer, CONVS, HOT, seed=1, answers_per_prompt=2)
    assert again == fresh  # texts, token ids, log-probs (bit for bit) and finished flags
    monkeypatch.delenv(answer_cache.ENV)
    assert sample_answers(model, tokenizer, CONVS, HOT, seed=1, answers_per_prompt=2) == fresh  # uncached: the same


def test_what_could_change_the_answers_is_another_entry(model, tokenizer, cache):
    sample_answers(model, tokenizer, CONVS, HOT, seed=1)
    sample_answers(model, tokenizer, CONVS, HOT, seed=2)                                  # seeds
    sample_answers(model, tokenizer, CONVS, HOT, seed=1, answers_per_prompt=2)            # more answers
    sample_answers(model, tokenizer, CONVS, Decoding(0.7, max_new_tokens=6), seed=1)      # decoding
    sample_answers(model, tokenizer, CONVS[:2], HOT, seed=1)                              # prompts
    model.set_attn_implementation("eager" if model.config._attn_implementation == "sdpa" else "sdpa")
    sample_answers(model, tokenizer, CONVS, HOT, seed=1)                                  # numerics
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    sample_answers(model, tokenizer, CONVS, HOT, seed=1)                                  # weights
    assert entries(cache) == 7
    greedy = Decoding(max_new_tokens=6)
    sample_answers(model, tokenizer, CONVS, greedy, seed=1)
    sample_answers(model, tokenizer, CONVS, greedy, seed=5, answers_per_prompt=4)         # greedy: seeds are moot
    assert entries(cache) == 8


def test_a_saved_and_reloaded_model_finds_the_answers_it_gave_in_memory(model, tokenizer, cache, tmp_path):
    from core.model import load_causal_lm, save_checkpoint
    first = sample_answers(for_inference(model), tokenizer, CONVS, HOT, seed=0)
    save_checkpoint(model, tokenizer, tmp_path / "m")
    reloaded = for_inference(load_causal_lm(tmp_path / "m").eval())
    assert answer_cache.load(answer_cache.key(reloaded, tokenizer, [[1]], HOT, [0])) is None  # other prompts: a miss
    assert sample_answers(reloaded, tokenizer, CONVS, HOT, seed=0) == first
    assert entries(cache) == 1


def test_a_damaged_entry_is_generated_again(model, tokenizer, cache):
    fresh = sample_answers(model, tokenizer, CONVS, HOT, seed=1)
    (entry,) = cache.glob("*.json")
    entry.write_text('[{"text": "cut off')
    assert sample_answers(model, tokenizer, CONVS, HOT, seed=1) == fresh
    assert answer_cache.load(entry.stem) == fresh and not list(cache.glob("*.tmp"))


def test_nothing_is_cached_without_the_variable(model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.delenv(answer_cache.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert answer_cache.key(model, tokenizer, [[1]], HOT, [1]) is None
    sample_answers(model, tokenizer, CONVS, HOT, seed=1)
    assert not list(tmp_path.rglob("*.json"))


def test_for_inference_switches_training_numerics_back(model):
    from core.onednn import OneDNNLinear, use_onednn_linear
    model.set_attn_implementation("eager")
    use_onednn_linear(model)
    for_inference(model)
    assert model.config._attn_implementation == "sdpa"
    from core.precision import inference_kernel
    onednn = any(isinstance(m, OneDNNLinear) for m in model.modules())
    assert onednn == (inference_kernel(model) == "fp32-onednn")
    use_onednn_linear(model)
    use_onednn_linear(model, on=False)
    assert not any(isinstance(m, OneDNNLinear) for m in model.modules())


def test_for_inference_takes_off_the_autocast_a_trainer_leaves_on_a_model(model, tokenizer, cache):
    import copy
    plain = copy.deepcopy(model)
    # what accelerate's prepare(model) does under mixed_precision="bf16" (no Accelerator here: its state is global)
    model._original_forward = model.forward
    model.forward = types.MethodType(torch.autocast("cpu", dtype=torch.bfloat16)(type(model).forward), model)
    assert answer_cache.key(model, tokenizer, [[1]], HOT, [0]) is None  # what it computes is not in the key
    restored = for_inference(model)
    assert "forward" not in vars(restored) and "_original_forward" not in vars(restored)
    assert sample_answers(restored, tokenizer, CONVS, HOT, seed=0) == sample_answers(for_inference(plain), tokenizer,
                                                                                     CONVS, HOT, seed=0)
    restored.forward = types.MethodType(lambda self, *a, **k: pytest.fail("a trainer's wrapper"), restored)  # TRL's kind
    assert answer_cache.key(restored, tokenizer, [[1]], HOT, [0]) is None
    assert "forward" not in vars(for_inference(restored))
