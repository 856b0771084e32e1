"""The decoding math on hand-made logits, and the generation loop on a scripted model and a tiny Llama."""

import math
from types import SimpleNamespace

import pytest
import torch

from core.config import UserError
from core.generation import Decoding, chat, chat_prompt_ids, complete, generate, sample, sampling_logprobs

LOGITS = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))


def kept(logprobs: torch.Tensor) -> set[int]:
    return set(torch.nonzero(logprobs > -math.inf).flatten().tolist())


def test_temperature_towards_zero_is_greedy():
    logits = torch.tensor([[1.0, 3.0, 2.9, -1.0], [0.2, 0.1, 0.0, 0.3]])
    greedy = sampling_logprobs(logits, temperature=0)
    assert greedy.argmax(-1).tolist() == [1, 3] and kept(greedy[0]) == {1}
    cold = sampling_logprobs(logits, temperature=1e-3).exp()
    assert torch.allclose(cold, greedy.exp(), atol=1e-6)


def test_temperature_scales_logits_and_large_t_is_uniform():
    t = 0.7
    assert torch.allclose(sampling_logprobs(LOGITS, t).exp(), torch.softmax(LOGITS / t, -1))
    hot = sampling_logprobs(LOGITS, temperature=1e5).exp()
    assert torch.allclose(hot, torch.full((4,), 0.25), atol=1e-4)
    assert torch.allclose(sampling_logprobs(LOGITS, 1.0).exp(), torch.tensor([0.5, 0.3, 0.15, 0.05]))


def test_top_k_keeps_exactly_k_and_renormalises():
    lp = sampling_logprobs(LOGITS, 1.0, top_k=2)
    assert kept(lp) == {0, 1}
    assert torch.allclose(lp.exp()[:2], torch.tensor([0.5, 0.3]) / 0.8)
    ties = sampling_logprobs(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0]), 1.0, top_k=2)
    assert len(kept(ties)) == 2 and kept(ties) <= {1, 2, 3}
    assert kept(sampling_logprobs(LOGITS, 1.0, top_k=10)) == {0, 1, 2, 3}


@pytest.mark.parametrize("p, expected", [(0.5, {0}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (0.96, {0, 1, 2, 3}),
                                         (0.1, {0})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    lp = sampling_logprobs(LOGITS, 1.0, top_p=p)
    assert kept(lp) == expected
    assert math.isclose(lp.exp().sum().item(), 1.0, rel_tol=1e-6)


def test_filters_combine_in_order_temperature_then_top_k_then_top_p():
    # T=0.5 sharpens to [.69, .25, .06, .006]; top-k 3 renormalises; top-p .9 then keeps the first two.
    lp = sampling_logprobs(LOGITS, 0.5, top_k=3, top_p=0.9)
    assert kept(lp) == {0, 1}
    sharp = torch.softmax(LOGITS / 0.5, -1)[:2]
    assert torch.allclose(lp.exp()[:2], sharp / sharp.sum(), atol=1e-6)


def test_sampling_frequencies_match_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20_000
    gens = [torch.Generator().manual_seed(0)]
    draws = torch.stack([sample(torch.log(probs)[None], gens)[0] for _ in range(n)])
    freq = torch.bincount(draws, minlength=4).float() / n
    assert torch.allclose(freq, probs, atol=0.012), freq  # ~3.5 standard errors
    masked = sampling_logprobs(torch.log(probs), 1.0, top_k=2)[None]
    assert set(sample(masked.expand(500, 4)).tolist()) <= {0, 1}


def test_bad_decoding_settings_fail_clearly():
    for bad in (Decoding(temperature=-1), Decoding(top_k=-2), Decoding(top_p=0), Decoding(max_new_tokens=0)):
        with pytest.raises(UserError):
            bad.validate()
    assert str(Decoding()) == "greedy, max_new_tokens=64"
    assert str(Decoding(0.8, 20, 0.9, 30)) == "temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=30"


# ---------------------------------------------------------------- the loop, on a scripted model

class RowCache:
    """Stands in for the KV cache: records which rows the loop keeps."""

    def __init__(self):
        self.kept = []

    def batch_select_indices(self, rows):
        self.kept.append(rows.tolist())


class CountingLM(torch.nn.Module):
    """Next token is always (last id + 1), and EOS after id 20; logits are 4 for that token, 0 elsewhere."""

    def __init__(self, vocab: int, eos: int):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)
        self.eos, self.calls, self.cache = eos, [], RowCache()

    def forward(self, input_ids, attention_mask, position_ids, use_cache=True, past_key_values=None):
        self.calls.append(input_ids.shape)
        assert attention_mask.shape[0] == position_ids.shape[0] == input_ids.shape[0]
        last = input_ids[:, -1:]
        nxt = torch.where(last == 20, torch.full_like(last, self.eos), last + 1)
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size).scatter(-1, nxt[..., None].expand(
            *input_ids.shape, 1), 4.0)
        return SimpleNamespace(logits=logits, past_key_values=self.cache)


def test_generate_stops_each_row_at_eos_and_reports_logprobs(tokenizer):
    lm = CountingLM(len(tokenizer), tokenizer.eos_token_id)
    out = generate(lm, tokenizer, [[5, 17], [10], [12]], Decoding(max_new_tokens=6))
    assert out[0].token_ids == [18, 19, 20, tokenizer.eos_token_id] and out[0].finished
    assert out[1].token_ids == [11, 12, 13, 14, 15, 16] and not out[1].finished
    assert out[2].token_ids == [13, 14, 15, 16, 17, 18] and not out[2].finished
    expected = 4.0 - math.log(math.exp(4.0) + len(tokenizer) - 1)
    assert all(math.isclose(x, expected, rel_tol=1e-5) for c in out for x in c.logprobs)
    # One prefill over the padded batch, then one token per step with the cache (none after the last token); once
    # row 0 has ended (a third of the batch), it leaves the batch and the cache, and the other two go on without it.
    assert [tuple(s) for s in lm.calls] == [(3, 2), (3, 1), (3, 1), (3, 1), (2, 1), (2, 1)]
    assert lm.cache.kept == [[1, 2]]
    assert "<|eos|>" not in out[0].text


def test_a_cache_that_cannot_drop_rows_decodes_its_batch_whole(tokenizer):
    lm = CountingLM(len(tokenizer), tokenizer.eos_token_id)
    lm.cache.layers = [RowCache(), SimpleNamespace()]  # a layer that cannot drop rows (say, a linear-attention state)
    out = generate(lm, tokenizer, [[5, 17], [10], [12]], Decoding(max_new_tokens=6))
    assert out[0].token_ids == [18, 19, 20, tokenizer.eos_token_id] and out[2].token_ids == [13, 14, 15, 16, 17, 18]
    assert [tuple(s) for s in lm.calls] == [(3, 2)] + [(3, 1)] * 5 and lm.cache.kept == []


def test_generate_never_emits_padded_vocab_rows(tokenizer):
    lm = CountingLM(len(tokenizer) + 40, tokenizer.eos_token_id)
    last = len(tokenizer) - 1
    out = generate(lm, tokenizer, [[last]], Decoding(max_new_tokens=2))
    assert all(t < len(tokenizer) for t in out[0].token_ids)


# ---------------------------------------------------------------- a real tiny Llama

@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    from core.model import ModelConfig, build_model
    return build_model(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1),
                       tokenizer, seed=0).eval()


def test_greedy_with_kv_cache_matches_transformers_generate(tiny_lm, tokenizer):
    texts = ["One day", "Tom went to the park. Amy had a red hat.\nQuestion: Where did Tom go?\nAnswer:"]
    ours = complete(tiny_lm, tokenizer, texts, Decoding(max_new_tokens=12))
    for text, c in zip(texts, ours):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]])
        ref = tiny_lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        assert c.token_ids == ref[0, ids.shape[1]:].tolist()[: len(c.token_ids)]
        # The reported log-probs are the model's own: recompute them from one forward pass.
        full = torch.cat([ids[0], torch.tensor(c.token_ids)])[None]
        lp = tiny_lm(full).logits[0, ids.shape[1] - 1:-1].float().log_softmax(-1)
        assert torch.allclose(lp.gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0], torch.tensor(c.logprobs),
                              atol=1e-4)


def test_sampling_is_seeded_and_independent_of_batching(tiny_lm, tokenizer):
    convos = [[{"role": "user", "content": f"What is {i} plus 2?"}] for i in range(5)]
    dec = Decoding(temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=10)
    a = chat(tiny_lm, tokenizer, convos, dec, seed=3, batch_size=5)
    b = chat(tiny_lm, tokenizer, convos, dec, seed=3, batch_size=2)
    c = chat(tiny_lm, tokenizer, convos, dec, seed=4, batch_size=5)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_dropping_finished_rows_keeps_every_answer(tiny_lm, tokenizer, monkeypatch):
    """Rows that end early leave the batch (smaller matmuls for the rest): the same tokens as a batch that keeps
    every row to the end, and log-probs within float rounding."""
    import copy

    import core.generation as generation
    convos = [[{"role": "user", "content": f"Tell me about {n}."}] for n in ("Tom", "Mia", "Sam", "Ben", "Zoe", "Leo")]
    tiny_lm = copy.deepcopy(tiny_lm)
    with torch.no_grad():  # make EOS likely where the hidden state is the prompt's average, so rows end at different steps
        ids = torch.tensor([chat_prompt_ids(tokenizer, convos[0])])
        h = tiny_lm.model(input_ids=ids).last_hidden_state[0].mean(0)
        tiny_lm.lm_head.weight[tokenizer.eos_token_id] = h * 6 / h.dot(h)
    dec = Decoding(temperature=1.0, max_new_tokens=16)
    rows_per_step = []
    hook = tiny_lm.register_forward_hook(lambda m, args, kw, out: rows_per_step.append(kw["input_ids"].shape[0]),
                                         with_kwargs=True)
    try:
        dropping = chat(tiny_lm, tokenizer, convos, dec, seed=5)
        monkeypatch.setattr(generation, "DROP_FINISHED", 2.0)  # never
        steps_dropping, rows_per_step[:] = list(rows_per_step), []
        keeping = chat(tiny_lm, tokenizer, convos, dec, seed=5)
    finally:
        hook.remove()
    lengths = sorted(len(c.token_ids) for c in keeping)
    assert lengths[0] < lengths[-1]  # the rows did end at different steps
    assert [c.token_ids for c in dropping] == [c.token_ids for c in keeping]
    for a, b in zip(dropping, keeping):
        assert a.finished == b.finished and a.text == b.text
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert min(steps_dropping) < len(convos) and set(rows_per_step) == {len(convos)}
    assert sum(steps_dropping) < sum(rows_per_step)
