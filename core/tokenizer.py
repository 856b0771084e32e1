"""Byte-level BPE tokenizer, the project's chat template, and the chat/EOS contract checks.

The chat template (one for every stage, training and inference):

    <|bos|><|user|> {user text}<|assistant|> {assistant text}<|eos|>...

- The assistant turn, its leading space and its single EOS sit inside `{% generation %}` markers,
  so TRL's assistant-only loss trains the model to end its turn.
- The space after a role tag makes answer words the same tokens as in running text
  ("Answer: Tom went" and "<|assistant|> Tom went" both start with " Tom"), so copying a name
  from the prompt is the identity on token ids.
- Rendering a prompt with `add_generation_prompt=True` is a prefix of the full conversation
  (DPO and GRPO need that).
- pad is its own token, never EOS, so padding never masks the real end of a turn.

`check_chat_contract(tokenizer)` verifies all of this and runs at every stage start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from core.config import UserError

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %} {{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% elif message['role'] in ['system', 'user'] %}"
    "<|{{ message['role'] }}|> {{ message['content'] }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2, max_length: int = 256):
    """Train a byte-level BPE on `texts` and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise UserError(f"tokenizer.vocab_size: {vocab_size} is too small; byte-level BPE needs at least "
                        f"{len(SPECIAL_TOKENS) + 256} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS, chat_template=CHAT_TEMPLATE, model_max_length=max_length,
        padding_side="right", clean_up_tokenization_spaces=False)


def adopt_hub_model(name: str, dtype=None):
    """A hub (or local) base model and its tokenizer, made to keep this project's chat contract: the project's
    bos / eos / pad and role tokens are added where missing, its chat template installed, the embeddings
    resized (new rows start at the mean embedding). Used by the GPU configs' `init_from` instead of pretraining."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as e:
        raise UserError(f"init_from={name!r}: cannot load it ({str(e).splitlines()[0]}); give a hub model id "
                        "(e.g. Qwen/Qwen2.5-0.5B, needs network) or a local checkpoint directory") from None
    tok.add_special_tokens({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                            "additional_special_tokens": ROLE_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok), mean_resizing=True)
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    check_chat_contract(tok, where=f"init_from={name}")
    return model, tok


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer
    if not Path(path).is_dir():
        raise UserError(f"{path}: tokenizer/model directory not found (run the stage that writes it)")
    tok = AutoTokenizer.from_pretrained(str(path))
    check_chat_contract(tok, where=str(path))
    return tok


def check_chat_contract(tok, where: str = "tokenizer") -> None:
    """Fail fast on the template/EOS bugs that break RLHF stacks silently."""
    def fail(msg: str):
        raise UserError(f"{where}: chat contract broken: {msg}")

    if not tok.chat_template or "{% generation %}" not in tok.chat_template:
        fail("chat template missing or without {% generation %} markers (needed for assistant-only loss)")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tok, name) is None:
            fail(f"{name} is not set")
    if tok.pad_token_id == tok.eos_token_id:
        fail("pad token equals eos token; padding would mask the real end of turn")

    convo = [{"role": "user", "content": "Where did Tom go?"},
             {"role": "assistant", "content": "Tom went to the park."},
             {"role": "user", "content": "What is 2 plus 3?"},
             {"role": "assistant", "content": "2 plus 3 is 5."}]
    full = tok.apply_chat_template(convo, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = full["input_ids"], full["assistant_masks"]
    if ids.count(tok.bos_token_id) != 1 or ids[0] != tok.bos_token_id:
        fail("a rendered conversation must start with exactly one BOS")
    if ids.count(tok.eos_token_id) != 2:
        fail(f"expected exactly one EOS per assistant turn (2), found {ids.count(tok.eos_token_id)}")
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    if trained != " Tom went to the park.<|eos|> 2 plus 3 is 5.<|eos|>":
        fail(f"assistant-only tokens are {trained!r}; they must be exactly the replies, each ending in EOS")
    prompt = tok.apply_chat_template(convo[:3], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    if ids[: len(prompt)] != prompt:
        fail("the generation prompt is not a prefix of the full conversation (template not prefix-preserving)")
    text = "One day Tom went to the park. 3 plus 4 is 7!\nZoë said: ¿hello?"
    if tok.decode(tok(text, add_special_tokens=False)["input_ids"]) != text:
        fail("encode/decode does not round-trip plain text")
