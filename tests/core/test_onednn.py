"""oneDNN linear layers: same numbers as torch's matmul (to fp32 rounding), same parameters and checkpoints."""

import pytest
import torch
import torch.nn.functional as F

from core.model import ModelConfig, build_model, save_checkpoint
from core.onednn import OneDNNLinear, matmul_nt, use_onednn_linear


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("rows", [3, 64])  # few rows take the plain matmul, many take oneDNN
def test_matmul_nt_matches_torch_forward_and_backward(rows):
    torch.manual_seed(0)
    a = torch.randn(2, rows, 48, requires_grad=True)
    b = torch.randn(80, 48, requires_grad=True)
    grad = torch.randn(2, rows, 80)
    out = matmul_nt(a, b)
    out.backward(grad)
    got = (out.detach(), a.grad.clone(), b.grad.clone())
    a.grad = b.grad = None
    ref = a @ b.T
    ref.backward(grad)
    for x, y in zip(got, (ref.detach(), a.grad, b.grad)):
        assert x.shape == y.shape and _close(x, y)


def test_llama_with_onednn_linear_trains_like_the_stock_one(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2, max_seq_len=64)
    stock, fast = build_model(cfg, tokenizer, seed=0), build_model(cfg, tokenizer, seed=0)
    keys = list(fast.state_dict())
    switched = use_onednn_linear(fast)
    assert switched == 2 * 7 + 1  # q k v o gate up down per layer, and the (tied) head
    assert isinstance(fast.lm_head, OneDNNLinear) and fast.lm_head.weight is fast.model.embed_tokens.weight
    assert list(fast.state_dict()) == keys

    batch = torch.randint(0, len(tokenizer), (4, 33), generator=torch.Generator().manual_seed(0))
    losses = []
    for model in (stock, torch.compile(fast)):
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, p), q in zip(stock.named_parameters(), fast.parameters()):
        assert _close(q.grad, p.grad), name

    save_checkpoint(fast, tokenizer, tmp_path / "model")  # a stock checkpoint: no trace of the switch
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert type(loaded.lm_head) is torch.nn.Linear
    assert torch.equal(loaded.model.layers[0].mlp.up_proj.weight, fast.model.layers[0].mlp.up_proj.weight)


def test_switch_leaves_bf16_models_gpu_machines_and_biased_layers_alone(tokenizer, monkeypatch):
    cfg = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=2, max_seq_len=64)
    assert use_onednn_linear(build_model(cfg, tokenizer).to(torch.bfloat16)) == 0
    with monkeypatch.context() as m:  # a GPU machine: the model is on the CPU only until it is moved
        m.setattr(torch.accelerator, "is_available", lambda: True)
        assert use_onednn_linear(build_model(cfg, tokenizer)) == 0
    biased = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8, bias=False))
    assert use_onednn_linear(biased) == 1 and type(biased[0]) is torch.nn.Linear


def test_a_switched_layer_under_bf16_autocast_is_a_plain_linear():
    layer = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = layer(x)
        use_onednn_linear(torch.nn.Sequential(layer))
        assert type(layer) is OneDNNLinear
        out = layer(x)
    assert out.dtype == ref.dtype == torch.bfloat16 and torch.equal(out, ref)
