"""train.precision: forced choices, the probe's measured pick and its cache, the fallbacks, the record."""

import json

import pytest
import torch

from core import precision
from core.config import UserError
from core.model import ModelConfig, build_model
from core.onednn import OneDNNLinear

MICRO = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=2, num_kv_heads=2, max_seq_len=64)


@pytest.fixture
def model(tokenizer):
    return build_model(MICRO, tokenizer)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path))
    return tmp_path / "numerics.json"


@pytest.mark.parametrize("forced", ["fp32", "fp32-onednn", "bf16"])
def test_a_forced_precision_runs_as_asked_without_a_probe(model, cache, monkeypatch, forced):
    monkeypatch.setattr(precision, "probe", lambda *a: pytest.fail("a forced precision must not probe"))
    n = precision.apply(forced, model)
    assert (n.precision, n.requested, n.source, n.tokens_per_s) == (forced, forced, "forced", {})
    assert n.bf16 == (forced == "bf16")
    switched = sum(isinstance(m, OneDNNLinear) for m in model.modules())
    assert switched == (3 * 7 + 1 if forced == "fp32-onednn" else 0)  # 7 projections a layer, and the tied head
    if forced == "bf16":  # only the attention dtype is measured (and cached)
        assert set(n.attention_ms) == set(precision.ATTENTION) and n.attention == precision.decide_attention(n.attention_ms)
        assert list(json.loads(cache.read_text()).values())[0].keys() >= {"attention_ms"}
    else:
        assert not cache.exists() and n.attention == ""


@pytest.mark.parametrize("ms, picked", [
    ({"fp32": 30.0, "bf16": 45.0, "eager": 40.0}, "fp32"),   # bf16 flash attention slower
    ({"fp32": 30.0, "bf16": 29.9, "eager": 29.8}, "fp32"),   # within the margin: the more precise one
    ({"fp32": 30.0, "bf16": 10.0, "eager": 20.0}, "bf16"),
    ({"fp32": 24.0, "bf16": 27.0, "eager": 22.0}, "eager"),  # the AMD EPYC's probe step
])
def test_decide_attention_takes_a_bf16_kind_only_when_clearly_faster(ms, picked):
    assert precision.decide_attention(ms) == picked


def test_fp32_attention_under_bf16_autocast_matches_fp32_and_is_not_saved(model, tmp_path):
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding: the mask goes through the kernel too
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = model(input_ids=ids, attention_mask=mask).logits.float()
            precision.use_attention("fp32", model)
            fp32_attention = model(input_ids=ids, attention_mask=mask).logits.float()
    assert model.config._attn_implementation == "sdpa_fp32"
    assert not torch.equal(plain, fp32_attention)  # the attention really ran another way
    real = mask.bool()  # padded positions attend to nothing and hold no answer
    error, bf16_error = ((x - reference)[real].abs().max() for x in (fp32_attention, plain))
    assert error < 0.02 and error <= bf16_error * 1.5  # bf16 matmuls around it, fp32 inside: no worse than all-bf16
    model.save_pretrained(tmp_path)
    assert "sdpa_fp32" not in (tmp_path / "config.json").read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # stock transformers, no registration needed
    assert reloaded.config._attn_implementation != "sdpa_fp32"


def test_fp32_attention_reaches_a_model_inside_a_wrapper(model):
    wrapper = torch.nn.Sequential(torch.nn.Identity(), torch.nn.ModuleDict({"body": model}))
    precision.use_attention("fp32", wrapper)
    assert model.config._attn_implementation == "sdpa_fp32"


def test_eager_attention_under_bf16_autocast_stays_close_and_is_not_saved(model, tmp_path):
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            precision.use_attention("eager", model)
            eager = model(input_ids=ids, attention_mask=mask).logits.float()
    assert model.config._attn_implementation == "eager"
    assert (eager - reference)[mask.bool()].abs().max() < 0.05  # bf16 rounding, with the padding respected
    model.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config._attn_implementation == "sdpa"


@pytest.mark.parametrize("stale", [None, {"fp32": 3.0, "bf16": 6.0}])  # no attention figures; an older probe's
def test_a_cache_entry_without_the_attention_probe_is_measured_again(model, cache, monkeypatch, stale):
    old = precision.choose("auto", model.config)
    entry = json.loads(cache.read_text())
    for e in entry.values():
        e.pop("attention_ms", None)
        if stale:
            e["attention_ms"] = stale
    cache.write_text(json.dumps(entry))
    assert precision.choose("auto", model.config).source == ("measured" if "bf16" in old.tokens_per_s else "cached")


def test_an_unknown_precision_is_a_one_line_error_naming_the_knob():
    with pytest.raises(UserError, match=r"train.precision must be one of auto, fp32, fp32-onednn, bf16, got 'fp16'"):
        precision.check("fp16", "train.precision")


def test_auto_measures_every_path_the_cpu_has_then_reads_the_cache(model, cache, monkeypatch):
    n = precision.choose("auto", model.config)
    assert n.source == "measured" and n.requested == "auto" and n.cpu
    assert list(n.tokens_per_s) == precision.candidates() and all(r > 0 for r in n.tokens_per_s.values())
    assert n.loss_gap["fp32"] == 0.0
    if "fp32-onednn" in n.loss_gap:
        assert n.loss_gap["fp32-onednn"] < 1e-4  # the same fp32 arithmetic, another kernel
    if "bf16" in n.loss_gap:
        assert 0 < n.loss_gap["bf16"] < precision.LOSS_TOLERANCE  # rounded, but the same training
    assert n.precision in n.eligible and "numerics:" in n.line() and n.precision in n.line()
    recorded = json.loads(cache.read_text())
    assert len(recorded) == 1 and next(iter(recorded.values()))["tokens_per_s"] == n.tokens_per_s

    monkeypatch.setattr(precision, "probe", lambda *a: pytest.fail("the second stage on this shape must read the cache"))
    again = precision.choose("auto", model.config)
    assert again.source == "cached" and (again.precision, again.tokens_per_s) == (n.precision, n.tokens_per_s)
    assert again.record()["tokens_per_s"] == n.tokens_per_s


def test_a_probe_leaves_the_stage_s_random_numbers_as_a_cache_hit_does(model, cache):
    # PPO seeds torch, picks its numerics, then draws its minibatch order: a probe used to reseed torch on the way.
    draws = []
    for source in ("measured", "cached"):
        torch.manual_seed(7)
        assert precision.choose("auto", model.config).source == source
        draws.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.rand(4))


@pytest.mark.parametrize("flags, native", [
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True),   # Intel Xeon with AMX (the issue-20 machine)
    ({"avx2", "avx512f", "avx512_bf16"}, True),            # AMD EPYC Zen 4, Intel Cooper Lake
    ({"avx2", "avx512f"}, False),                          # AVX-512 without bf16: emulated, never raced
    (set(), False),                                        # no /proc/cpuinfo
])
def test_bf16_races_only_where_the_cpu_runs_it_natively(monkeypatch, flags, native):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    assert precision.cpu_has_bf16() == native and ("bf16" in precision.candidates()) == native
    assert precision.candidates()[0] == "fp32"  # the simplest first: every other path must beat it


def test_another_shape_is_measured_again(model, tokenizer, cache):
    precision.choose("auto", model.config)
    wider = build_model(ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                                    max_seq_len=64), tokenizer)
    assert precision.choose("auto", wider.config).source == "measured"
    assert len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("compiled", [False, True])
def test_a_compiled_step_runs_eager_attention_under_bf16_whatever_the_race(model, tokenizer, cache, monkeypatch,
                                                                          compiled):
    monkeypatch.setattr(precision, "attention_probe", lambda config: {"fp32": 24.0, "bf16": 27.4, "eager": 23.6})
    n = precision.apply("bf16", model, compiled=compiled)
    assert n.attention == ("eager" if compiled else "fp32") and n.compiled == compiled
    assert n.attention_ms == {"fp32": 24.0, "bf16": 27.4, "eager": 23.6}  # still raced and cached for later stages
    assert model.config._attn_implementation == ("eager" if compiled else "sdpa_fp32")
    assert ("compiled" in n.line()) == compiled
    assert precision.apply("fp32", build_model(MICRO, tokenizer), compiled=True).attention == ""  # no bf16, no pick


@pytest.mark.parametrize("rates, gaps, picked", [
    ({"fp32": 100, "fp32-onednn": 200, "bf16": 400}, {"bf16": 0.002}, "bf16"),          # fastest and matching
    ({"fp32": 100, "fp32-onednn": 200, "bf16": 150}, {"bf16": 0.002}, "fp32-onednn"),   # bf16 not faster: fall back
    ({"fp32": 100, "fp32-onednn": 200, "bf16": 400}, {"bf16": 0.05}, "fp32-onednn"),    # bf16 trains differently
    ({"fp32": 100, "fp32-onednn": 104}, {}, "fp32"),                                    # within the margin: simplest
    ({"fp32": 100, "fp32-onednn": 90, "bf16": 103}, {"bf16": 0.0}, "fp32"),
    ({"fp32": 100, "bf16": 300}, {"bf16": 0.001}, "bf16"),                              # no oneDNN on this build
])
def test_decide_takes_the_fastest_path_that_trains_like_fp32(rates, gaps, picked):
    chosen, eligible = precision.decide(rates, gaps)
    assert chosen == picked
    assert ("bf16" in eligible) == ("bf16" in rates and gaps.get("bf16", 0) <= precision.LOSS_TOLERANCE)


def test_a_probe_that_finds_bf16_faster_but_off_falls_back(model, cache, monkeypatch):
    def fake_probe(paths, config, attention):
        losses = [7.0, 6.0, 5.0, 4.0]
        return {"fp32": (100.0, losses), "fp32-onednn": (101.0, losses), "bf16": (500.0, [7.0, 6.0, 5.0, 4.5])}
    monkeypatch.setattr(precision, "candidates", lambda: ["fp32", "fp32-onednn", "bf16"])
    monkeypatch.setattr(precision, "probe", fake_probe)
    n = precision.choose("auto", model.config)
    assert n.precision == "fp32" and n.eligible == ["fp32", "fp32-onednn"]
    assert n.loss_gap["bf16"] == pytest.approx(0.5 / 4.0) and n.tokens_per_s["bf16"] == 500.0


def test_auto_on_a_gpu_is_bf16_where_it_is_supported(model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, picked in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        n = precision.choose("auto", model.config)
        assert (n.precision, n.source) == (picked, "gpu")


def test_an_unwritable_cache_costs_only_a_note(model, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(blocker / "sub"))
    assert precision.choose("auto", model.config).source == "measured"
    assert "could not cache the numerics probe" in capsys.readouterr().out


@pytest.mark.parametrize("rates, switched", [
    ({"fp32": 100.0, "fp32-onednn": 200.0}, True),
    ({"fp32": 100.0, "fp32-onednn": 90.0}, False),
    ({"fp32": 100.0, "fp32-onednn": 150.0, "bf16": 400.0}, True),   # bf16 trains faster; inference stays fp32
])
def test_inference_runs_the_faster_fp32_kernel_of_the_probe(model, cache, monkeypatch, rates, switched):
    from core.model import to_inference_device
    monkeypatch.setattr(precision, "candidates", lambda: list(rates))
    monkeypatch.setattr(precision, "probe", lambda paths, config, attention: {p: (rates[p], [7.0, 6.0]) for p in paths})
    to_inference_device(model)
    assert any(isinstance(m, OneDNNLinear) for m in model.modules()) == switched
    assert next(model.parameters()).dtype == torch.float32
