"""Stand-ins for the gpu chain's hub inputs, built locally in seconds: a randomly initialised Qwen2 (a hub
architecture that is not the project's Llama) with a BPE tokenizer and a ChatML template of its own, a Qwen2
reward model with its own tokenizer as the label judge, and small files in the formats of UltraChat (SFT),
UltraFeedback (preferences and prompts), HH-RLHF (held-out preferences) and fineweb-edu (text)."""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOPICS = ["cats", "rain", "bread", "maps", "owls", "snow", "boats", "tea", "bees", "kites", "clocks", "moss"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _exchange(rng: random.Random, i: int) -> tuple[str, str, str]:
    topic = TOPICS[i % len(TOPICS)]
    prompt = f"Tell me something about {topic}, please ({i})."
    good = f"Here is a fact about {topic}: people like {topic} a lot. I hope that helps."
    bad = rng.choice([f"{topic} {topic} {topic}.", "No.", f"I will not talk about {topic}."])
    return prompt, good, bad


def data_files(root: Path, n: int = 24) -> dict[str, Path]:
    rng = random.Random(0)
    sft, uf, hh, text = [], [], [], []
    for i in range(n):
        prompt, good, bad = _exchange(rng, i)
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": good}]
        sft.append({"prompt": prompt, "prompt_id": f"c{i:03d}", "messages": turns})
        uf.append({"prompt": prompt, "prompt_id": f"f{i:03d}", "chosen": turns, "messages": turns,
                   "rejected": [turns[0], {"role": "assistant", "content": bad}], "score_chosen": 8.0,
                   "score_rejected": 3.0})
        hh.append({"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {good}",
                   "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {bad}"})
        text.append({"text": f"{good} {prompt} The {TOPICS[(i + 3) % len(TOPICS)]} are near the river.",
                     "id": f"<urn:uuid:{i}>", "url": f"https://example.org/{i}"})
    return {"sft": _write(root / "ultrachat.jsonl", sft), "prefs": _write(root / "ultrafeedback.jsonl", uf),
            "hh": _write(root / "hh_rlhf.jsonl", hh), "text": _write(root / "fineweb.jsonl", text)}


def _tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)


def models(root: Path, texts: list[str]) -> dict[str, Path]:
    """A Qwen2 base model and a Qwen2 reward model (one score), each with its own tokenizer, saved like hub models."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification
    tok = _tokenizer(texts)
    conf = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    out = {"base": root / "qwen2-base", "judge": root / "qwen2-reward"}
    Qwen2ForCausalLM(Qwen2Config(**conf)).save_pretrained(out["base"])
    Qwen2ForSequenceClassification(Qwen2Config(**conf, num_labels=1)).save_pretrained(out["judge"])
    for d in out.values():
        tok.save_pretrained(d)
    return out
