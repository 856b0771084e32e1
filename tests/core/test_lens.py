"""The Playground's numbers on a tiny model: they are the model's own, and the decoding math holds."""

import math

import pytest
import torch

from core.config import UserError
from core.generation import Decoding
from core.lens import Lens, check_comparable, kl

CONTEXT = "Tom has a red ball. Tom went to the park with"


@pytest.fixture(scope="module")
def lens(base_model_dir):
    return Lens(base_model_dir, "base")


def test_next_token_is_the_models_own_softmax_and_sums_to_one(lens):
    ids = lens.encode(CONTEXT, chat=False)
    assert ids[0] == lens.tokenizer.bos_token_id and lens.tokenizer.decode(ids[1:]) == CONTEXT
    nt = lens.next_token(ids)
    with torch.no_grad():
        direct = lens.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    torch.testing.assert_close(nt.logits, direct[: lens.vocab], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nt.p_model, direct.softmax(-1)[: lens.vocab], atol=1e-6, rtol=1e-4)
    assert nt.p_model.shape == (len(lens.tokenizer),) and lens.model.config.vocab_size > lens.vocab
    # the model's distribution covers its padded embedding rows too; the decoder never picks those
    assert float(nt.p_model.sum()) + nt.p_padding == pytest.approx(1.0, abs=1e-5) and nt.p_padding > 0
    assert float(nt.p_sampler.sum()) == pytest.approx(1.0, abs=1e-5)
    assert nt.greedy == int(direct.argmax()) and nt.top(3)[0] == nt.greedy
    assert 0 < nt.entropy <= math.log(lens.vocab) + 1e-6


def test_temperature_scales_the_logits(lens):
    ids = lens.encode(CONTEXT, chat=True)
    z = lens.next_token(ids).logits   # over the real vocabulary: padding rows are never drawn
    for t in (0.5, 1.0, 2.0):
        torch.testing.assert_close(lens.next_token(ids, Decoding(t)).p_sampler, (z / t).softmax(-1), atol=1e-6, rtol=1e-5)
    hot, cold = lens.next_token(ids, Decoding(2.0)), lens.next_token(ids, Decoding(0.5))
    assert hot.entropy == cold.entropy                      # the model's own distribution does not move
    assert float(cold.p_sampler.max()) > float(hot.p_sampler.max())   # lower T sharpens the decoder's
    greedy = lens.next_token(ids, Decoding(0.0))
    assert int(greedy.kept.sum()) == 1 and float(greedy.p_sampler[greedy.greedy]) == 1.0


def test_top_k_and_top_p_keep_the_right_sets(lens):
    ids = lens.encode(CONTEXT, chat=False)
    nt = lens.next_token(ids, Decoding(1.0, top_k=5))
    assert set(torch.nonzero(nt.kept).flatten().tolist()) == set(nt.top(5))
    p = lens.next_token(ids).logits.softmax(-1)   # top-p counts the decoder's mass (real vocabulary, T = 1)
    for top_p in (0.3, 0.6, 0.9):
        kept = lens.next_token(ids, Decoding(1.0, top_p=top_p)).kept
        mass = sorted(p[kept].tolist(), reverse=True)
        assert sum(mass) >= top_p - 1e-6 and sum(mass[:-1]) < top_p   # the smallest set that reaches p
        assert float(p[kept].min()) >= float(p[~kept].max())           # made of the most likely tokens


def test_step_greedy_is_the_argmax_and_sampling_stays_in_the_kept_set(lens):
    ids = lens.encode(CONTEXT, chat=False)
    assert lens.step(ids, Decoding(), seed=0) == lens.next_token(ids).greedy
    dec = Decoding(1.5, top_k=3)
    draws = [lens.step(ids, dec, seed=s) for s in range(30)]
    assert set(draws) <= set(lens.next_token(ids).top(3)) and len(set(draws)) > 1
    assert draws == [lens.step(ids, dec, seed=s) for s in range(30)]   # seeded: the same draws again
    c = lens.continue_(ids, Decoding(max_new_tokens=5), seed=0)
    assert c.token_ids[0] == lens.next_token(ids).greedy and len(c.token_ids) <= 5


def test_loss_is_the_models_own_cross_entropy(lens):
    ctx = lens.encode(CONTEXT, chat=False)
    cont = lens.encode_reply(CONTEXT, " a dog. The end.", chat=False)
    cl = lens.loss(ctx, cont)
    with torch.no_grad():
        own = lens.model(input_ids=torch.tensor([ctx + cont]), labels=torch.tensor([[-100] * len(ctx) + cont])).loss
    assert cl.mean_nll == pytest.approx(float(own), rel=1e-4)
    assert cl.perplexity == pytest.approx(math.exp(float(own)), rel=1e-4)
    assert [t.token_id for t in cl.tokens] == cont
    assert all(t.p == pytest.approx(math.exp(-t.nll)) for t in cl.tokens)
    first = lens.next_token(ctx).p_model[cont[0]]
    assert cl.tokens[0].p == pytest.approx(float(first), rel=1e-4)
    with pytest.raises(UserError, match="continuation is empty"):
        lens.loss(ctx, [])


def test_chat_reply_tokens_are_the_ones_sft_trains_on(lens):
    tok = lens.tokenizer
    convo = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}]
    full = tok.apply_chat_template(convo, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [t for t, m in zip(full["input_ids"], full["assistant_masks"]) if m]
    reply = lens.encode_reply("What is 2 plus 3?", "2 plus 3 is 5.", chat=True)
    assert reply[-1] == tok.eos_token_id and reply[-len(trained):] == trained
    assert lens.encode("What is 2 plus 3?", chat=True) + reply == full["input_ids"]


def test_neighbours_are_cosine_nearest_rows_of_the_embedding(lens):
    t = lens.token_id(" park") if len(lens.tokenizer(" park", add_special_tokens=False)["input_ids"]) == 1 else 100
    near = lens.neighbours(t, k=5)
    table = lens.model.get_input_embeddings().weight[: lens.vocab].detach()
    sims = torch.nn.functional.cosine_similarity(table, table[t][None], dim=-1)
    sims[t] = -2
    assert [i for i, _ in near] == sims.topk(5).indices.tolist()
    assert t not in [i for i, _ in near] and [s for _, s in near] == sorted((s for _, s in near), reverse=True)


def test_token_lookup_by_text_or_id(lens):
    assert lens.token_id("7") == 7 and lens.token_id(lens.piece(300)) == 300
    with pytest.raises(UserError, match="not one"):
        lens.token_id("Tom went to the park")
    with pytest.raises(UserError, match="outside the vocabulary"):
        lens.token_id("99999")


def test_compare_two_checkpoints(lens, other_model_dir, tmp_path):
    b = Lens(other_model_dir, "other")
    check_comparable(lens, b)
    ids = lens.encode(CONTEXT, chat=False)
    pa, pb = lens.next_token(ids).p_model, b.next_token(ids).p_model
    assert kl(pa, pa) == pytest.approx(0.0, abs=1e-6) and kl(pa, pb) > 0
    assert kl(pa, pb) == pytest.approx(float((pa * (pa.log() - pb.log())).sum()), rel=1e-4)

    from core.model import ModelConfig, build_model, save_checkpoint
    from core.tokenizer import train_tokenizer
    odd = train_tokenizer(["a b c d e f g"] * 50 + ["hello world"] * 50, vocab_size=300)
    save_checkpoint(build_model(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                            num_kv_heads=2, max_seq_len=64), odd), odd, tmp_path / "odd")
    with pytest.raises(UserError, match="different tokenizers"):
        check_comparable(lens, Lens(tmp_path / "odd"))
