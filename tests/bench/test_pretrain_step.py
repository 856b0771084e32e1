"""Keeps `make bench` from rotting: each eager variant trains a micro model for a couple of steps."""

import pytest

from bench.pretrain_step import NanoGPT, flops_per_token, run_variant


@pytest.mark.parametrize("variant", ["eager", "nanogpt"])
def test_variant_measures_a_real_step(variant):
    row = run_variant(variant, d=32, layers=1, steps=2, warmup=1)
    assert row["tok_s"] > 0 and row["gflops"] > 0 and row["params"] > 32 * 2048


def test_nanogpt_is_causal():
    import torch
    model = NanoGPT(vocab=50, d=16, layers=1, heads=2, ctx=8).eval()
    x = torch.randint(0, 50, (1, 8))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 50
    # changing the last token must not change any earlier position's logits
    torch.testing.assert_close(model(x)[0, :-1], model(y)[0, :-1])
    assert flops_per_token(1000, 1, 16) == 6 * 1000 + 12 * 16 * 256
