"""Look inside a causal LM: the numbers the Playground and `make inspect` show.

Every number comes from the checkpoint's own logits z for the next token:
  tokens       the text split into token ids (what the model actually reads)
  neighbours   a token is a row of the embedding matrix; its nearest rows by cosine similarity
  next token   p(token | context) = softmax(z); a decoder draws from softmax(z / T) restricted to
               the top-k / top-p set (core.generation.sampling_logprobs; T = 0 is greedy)
  step         append one token: the argmax, or a draw from the decoder's distribution
  loss         per-token p and -log p of a continuation after a context; their mean is the
               cross-entropy that pretraining minimises, exp(mean) the perplexity
  compare      two checkpoints (same tokenizer) on one context, and the KL between them
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import UserError
from core.generation import (Completion, Decoding, chat_prompt_ids, completion_logprobs, generate, next_token_logits,
                             sample, sampling_logprobs)


@dataclass
class NextToken:
    """The next-token distribution for one context under one decoding setting (tensors over the tokenizer's vocab)."""
    logits: torch.Tensor      # z
    p_model: torch.Tensor     # softmax(z): the model's own distribution (the one its loss is computed from)
    p_sampler: torch.Tensor   # what the decoder draws from; 0 outside the kept set
    decoding: Decoding
    p_padding: float = 0.0    # the model's mass on embedding rows past the vocabulary (never emitted)

    @property
    def kept(self) -> torch.Tensor:
        return self.p_sampler > 0

    @property
    def greedy(self) -> int:
        return int(self.logits.argmax())

    @property
    def entropy(self) -> float:
        """Entropy of the model's distribution in nats (0 = certain; log V = uniform)."""
        p = self.p_model
        return float(-(p * p.clamp_min(1e-30).log()).sum())  # (padding rows, ~0 once trained, left out)

    def top(self, k: int) -> list[int]:
        """The k most likely token ids under the model, most likely first."""
        return self.p_model.topk(min(k, len(self.p_model))).indices.tolist()


@dataclass
class TokenLoss:
    token_id: int
    piece: str
    p: float                  # p_model(token | everything before it)
    nll: float                # -log p


@dataclass
class ContinuationLoss:
    tokens: list[TokenLoss]

    @property
    def mean_nll(self) -> float:
        """Cross-entropy of the continuation: the mean of -log p over its tokens."""
        return sum(t.nll for t in self.tokens) / len(self.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) in nats between two distributions over the same vocabulary."""
    mask = p > 0
    return float((p[mask] * (p[mask].log() - q[mask].clamp_min(1e-30).log())).sum())


class Lens:
    """One loaded checkpoint and the questions one can ask it. Logits are cached per context, so
    moving a temperature slider re-draws the distribution without another forward pass."""

    def __init__(self, path: str | Path, name: str | None = None, cache_size: int = 64):
        from core.model import load_causal_lm
        from core.tokenizer import load_tokenizer
        self.path, self.name = str(path), name or Path(path).parent.name
        self.tokenizer = load_tokenizer(path)
        self.model = load_causal_lm(path).eval()
        self.vocab = len(self.tokenizer)   # embedding rows past this are padding, never emitted
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- tokens
    def encode(self, text: str, chat: bool) -> list[int]:
        """The ids the model reads: a user turn in the chat template, or BOS + raw text (a base model's prompt)."""
        if chat:
            return chat_prompt_ids(self.tokenizer, [{"role": "user", "content": text}])
        return [self.tokenizer.bos_token_id] + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_reply(self, user_text: str, reply: str, chat: bool) -> list[int]:
        """The ids of `reply` as they follow encode(user_text, chat): in chat mode the assistant turn as the
        template writes it (leading space, closing EOS), exactly the tokens SFT trains on."""
        if not chat:
            return self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        prompt = self.encode(user_text, chat=True)
        full = self.tokenizer.apply_chat_template([{"role": "user", "content": user_text},
                                                   {"role": "assistant", "content": reply}],
                                                  tokenize=True, return_dict=True)["input_ids"]
        assert full[:len(prompt)] == prompt, "chat template is not prefix-preserving"
        return full[len(prompt):]

    def piece(self, token_id: int) -> str:
        """The text of one token as it appears in the output (special tokens by name)."""
        return self.tokenizer.decode([token_id])

    def token_id(self, text: str) -> int:
        """A token given as its id ("412") or as its exact text (" park")."""
        text = text.strip("\n")
        if text.strip().isdigit():
            i = int(text.strip())
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise UserError(f"{text!r} is {len(ids)} tokens, not one: give a single token's text or its id")
            i = ids[0]
        if not 0 <= i < self.vocab:
            raise UserError(f"token id {i} is outside the vocabulary (0..{self.vocab - 1})")
        return i

    # ---------------------------------------------------------------- embeddings
    def embedding(self, token_id: int) -> torch.Tensor:
        return self.model.get_input_embeddings().weight[token_id].detach().float()

    def neighbours(self, token_id: int, k: int = 10) -> list[tuple[int, float]]:
        """The k tokens whose embedding rows are most similar (cosine) to token_id's, itself excluded."""
        table = self.model.get_input_embeddings().weight[: self.vocab].detach().float()
        sims = torch.nn.functional.cosine_similarity(table, table[token_id][None], dim=-1)
        sims[token_id] = -math.inf
        top = sims.topk(min(k, self.vocab - 1))
        return list(zip(top.indices.tolist(), top.values.tolist()))

    # ---------------------------------------------------------------- next token
    def logits(self, ids: list[int]) -> torch.Tensor:
        key = tuple(ids)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        z = next_token_logits(self.model, [list(ids)], self.tokenizer.pad_token_id)[0]
        with self._lock:
            self._cache[key] = z
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return z

    def next_token(self, ids: list[int], decoding: Decoding = Decoding()) -> NextToken:
        decoding.validate()
        full = self.logits(ids)
        p, z = full.softmax(-1), full[: self.vocab]
        p_sampler = sampling_logprobs(z, decoding.temperature, decoding.top_k, decoding.top_p).exp()
        return NextToken(z, p[: self.vocab], p_sampler, decoding, float(p[self.vocab:].sum()))

    def step(self, ids: list[int], decoding: Decoding, seed: int) -> int:
        """The next token: greedy at temperature 0, else one draw seeded by (seed, position)."""
        nt = self.next_token(ids, decoding)
        if decoding.temperature == 0:
            return nt.greedy
        g = torch.Generator().manual_seed(seed * 1_000_003 + len(ids))
        return int(sample(nt.p_sampler.log()[None], [g])[0])

    def continue_(self, ids: list[int], decoding: Decoding, seed: int) -> Completion:
        return generate(self.model, self.tokenizer, [ids], decoding, seed)[0]

    # ---------------------------------------------------------------- loss
    def loss(self, context: list[int], continuation: list[int]) -> ContinuationLoss:
        """Teacher-forced log p of each continuation token: the numbers a training loss is the mean of."""
        if not continuation:
            raise UserError("the continuation is empty: type the text whose loss you want after the context")
        logps = completion_logprobs(self.model, [context], [continuation], self.tokenizer.pad_token_id)[0]
        return ContinuationLoss([TokenLoss(t, self.piece(t), math.exp(lp), -lp) for t, lp in zip(continuation, logps)])


def check_comparable(a: Lens, b: Lens) -> None:
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise UserError(f"{a.path} and {b.path} have different tokenizers: their next-token distributions "
                        "are over different vocabularies and cannot be compared")
