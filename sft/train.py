"""SFT: supervised fine-tuning of the base model on chat demonstrations (full or LoRA), with TRL's SFTTrainer.

Run:    make sft
        python -m sft.train --config configs/tiny/sft.yaml --model runs/tiny/pretrain/model \
            --data runs/tiny/world/sft.jsonl --heldout-prompts runs/tiny/world/prompts_heldout.jsonl \
            --out runs/tiny/sft [--corrections runs/tiny/prefs/corrections.jsonl] [train.epochs=1 ...]
Reads:  the base checkpoint; chat demonstrations {"messages": [user, assistant, ...]} (plus, when the
        labeling app has exported them, annotators' corrections in the same format); held-out prompt
        rows with reference answers (held-out loss, and the task evaluation below)
Writes: <out>/model (HF checkpoint; a LoRA run is merged first, so it is always a plain model),
        <out>/checkpoints (resume state), config.yaml, metrics.json, logs/ (tensorboard), DONE (last)

The loss is on assistant tokens only (the template's {% generation %} block: the reply and its EOS),
so the model learns to answer and to stop, not to imitate prompts. With data.pretrain_mix > 0, that
many pretraining documents per demonstration join the data (loss on every token of them), so SFT keeps
the base model's language modelling (the alignment tax: held-out corpus perplexity). Bad rows (no
messages, wrong role order, empty assistant turn, longer than the context) stop the run naming the row, or are skipped
and counted when data.skip_bad_rows is true.

At the end the model answers held-out prompts greedily and the scripted annotator checks them:
metrics.json holds the correct rate and mean rubric score per task, before (the base model through
the same chat template) and after SFT. Rerunning after a crash resumes from the newest checkpoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.annotator import first_per_task, score_answers
from core.artifacts import StageDir
from core.config import UserError, cli
from core.data import check_chat_rows, load_rows
from core.distributed import in_sync, is_main, per_process_threads, world_size
from core.generation import Decoding, chat
from core.precision import apply as apply_precision
from core.model import count_params, for_inference, load_causal_lm, save_checkpoint
from core.tokenizer import load_tokenizer
from core.training import LoraSettings, TrainSettings, last_checkpoint, lora_config, merge_lora, trl_args


@dataclass
class DataSettings:
    messages_column: str = "messages"  # hub datasets: the column holding the conversation (role/content list)
    skip_bad_rows: bool = False        # false = a bad row stops the run naming it
    heldout_loss_rows: int = 500       # held-out reference conversations for the loss before/after
    # Pretraining text mixed in (documents per demonstration; 0 = off, --corpus needed otherwise): the
    # loss on it is on every token, so SFT keeps the base model's language modelling (less alignment tax).
    pretrain_mix: float = 0.0


@dataclass
class EvalSettings:
    per_task: int = 50                 # held-out prompts per task answered greedily and judged
    max_new_tokens: int = 80
    sample_chats: int = 4              # example chats in metrics.json (greedy and T=0.8)


@dataclass
class SFTStageConfig:
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    data: DataSettings = field(default_factory=DataSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        if self.lora.enabled and (self.lora.r <= 0 or not self.lora.target_modules):
            raise UserError("lora.r must be positive and lora.target_modules non-empty when lora.enabled is true")


# ---------------------------------------------------------------- evaluation

def answer_and_judge(model, tokenizer, prompts: list[dict], max_new_tokens: int) -> dict:
    """Greedy replies to prompt rows, scored by the scripted annotator."""
    done = chat(model, tokenizer, [p["messages"] for p in prompts], Decoding(max_new_tokens=max_new_tokens))
    result = score_answers(prompts, [c.text for c in done])
    result["eos_rate"] = round(sum(c.finished for c in done) / max(1, len(done)), 3)
    return result


def sample_chats(model, tokenizer, prompts: list[dict], n: int, seed: int, max_new_tokens: int) -> list[dict]:
    picked = first_per_task(prompts, 1)[:n]
    out = []
    for dec in (Decoding(max_new_tokens=max_new_tokens), Decoding(0.8, max_new_tokens=max_new_tokens)):
        for p, c in zip(picked, chat(model, tokenizer, [p["messages"] for p in picked], dec, seed=seed)):
            out.append({"prompt": p["messages"][-1]["content"], "decoding": str(dec), "reply": c.text})
    return out


def messages_rows(rows: list[dict], column: str, source: str) -> list[dict]:
    """Rows as {"messages": [...]}, the conversation taken from `column` (data.messages_column)."""
    if column == "messages":
        return rows
    if rows and column not in rows[0]:
        raise UserError(f"{source}: no column {column!r} (columns: {', '.join(sorted(rows[0]))}); "
                        "fix data.messages_column")
    return [{"messages": r.get(column)} for r in rows]


# ---------------------------------------------------------------- training

def trainer_args(cfg: SFTStageConfig, out: Path, conversational: bool = True, bf16: bool = False):
    """Chats: TRL masks all but the template's generation block; pre-tokenized rows carry that mask themselves."""
    from trl import SFTConfig
    return SFTConfig(**trl_args(cfg.train, cfg.seed, out, bf16), assistant_only_loss=conversational, packing=False)


def mixed_rows(tokenizer, chats: list[dict], texts: list[str], max_len: int) -> list[dict]:
    """Pre-tokenized rows for one dataset: chats with the assistant mask of the template's generation block
    (the loss sees replies only), corpus documents as <bos> text <eos> with every token in the loss."""
    rows = []
    for r in chats:
        enc = tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        rows.append({"input_ids": enc["input_ids"], "assistant_masks": enc["assistant_masks"]})
    for t in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"][: max_len - 2]
        ids.append(tokenizer.eos_token_id)
        rows.append({"input_ids": ids, "assistant_masks": [1] * len(ids)})
    return rows


def build_trainer(cfg: SFTStageConfig, policy, tokenizer, rows: list[dict], heldout: list[dict], out: Path,
                  callbacks: list = (), bf16: bool = False):
    from datasets import Dataset
    from trl import SFTTrainer
    return SFTTrainer(model=policy, args=trainer_args(cfg, out, "messages" in rows[0], bf16), processing_class=tokenizer,
                      train_dataset=Dataset.from_list(rows), eval_dataset=Dataset.from_list(heldout),
                      peft_config=lora_config(cfg.lora, policy.config.num_hidden_layers), callbacks=list(callbacks))


def main(cfg: SFTStageConfig, model: str, data: str, heldout_prompts: str, out: str,
         corrections: str | None = None, corpus: str | None = None) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    stage = StageDir(out)
    tokenizer = load_tokenizer(model)
    max_len = cfg.train.max_length
    rows, skipped = check_chat_rows(messages_rows(load_rows(data), cfg.data.messages_column, data), data, tokenizer,
                                    max_len, cfg.data.skip_bad_rows)
    n_demos = len(rows)
    inputs = {"model_config": Path(model) / "config.json", "model_weights": Path(model) / "model.safetensors",
              "data": data, "heldout_prompts": heldout_prompts}
    if corrections:
        extra, skipped_corr = check_chat_rows(load_rows(corrections), corrections, tokenizer, max_len,
                                              cfg.data.skip_bad_rows)
        rows += extra
        skipped = {f"corrections: {k}": v for k, v in skipped_corr.items()} | skipped
        inputs["corrections"] = corrections
    texts = []
    if cfg.data.pretrain_mix > 0:
        if not corpus:
            raise UserError("data.pretrain_mix > 0 needs --corpus (the pretraining text); or set data.pretrain_mix=0")
        n_docs = round(cfg.data.pretrain_mix * len(rows))
        texts = [r["text"] for r in load_rows(corpus)[:n_docs] if r.get("text")]
        inputs["corpus"] = corpus
    prompts = load_rows(heldout_prompts)
    missing = [i for i, p in enumerate(prompts, 1) if not {"messages", "task", "reference"} <= p.keys()]
    if missing:
        raise UserError(f"{heldout_prompts}: row {missing[0]} lacks 'messages', 'task' or 'reference' "
                        "(prompt rows come from `make world`)")
    heldout_convos = [{"messages": p["messages"] + [{"role": "assistant", "content": p["reference"]}]}
                      for p in prompts[: cfg.data.heldout_loss_rows]]
    eval_prompts = first_per_task(prompts, cfg.eval.per_task)
    policy = load_causal_lm(model)
    context = policy.config.max_position_embeddings
    if max_len > context:
        raise UserError(f"train.max_length={max_len} is longer than the model's context ({model}: "
                        f"max_position_embeddings={context}); lower train.max_length")
    stage.start(cfg, inputs=inputs, resume_state=("checkpoints",), stage_file=__file__)
    torch.set_num_threads(cfg.train.threads or per_process_threads())
    if skipped:
        print(f"skipped {sum(skipped.values())} bad rows: {skipped}")
    numerics = apply_precision(cfg.train.precision, policy)

    base_eval = answer_and_judge(policy, tokenizer, eval_prompts, cfg.eval.max_new_tokens) if is_main() else None

    writer = SummaryWriter(str(stage.logs))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        # Mixed in, every row is pre-tokenized with its loss mask; the held-out loss stays on replies only.
        train_rows = mixed_rows(tokenizer, rows, texts, max_len) if texts else rows
        eval_rows = mixed_rows(tokenizer, heldout_convos, [], max_len) if texts else heldout_convos
        trainer = build_trainer(cfg, policy, tokenizer, train_rows, eval_rows, stage.checkpoints,
                                [TensorBoardCallback(writer)], numerics.bf16)
        # In several processes, evaluate() before train() leaves the model without its DDP wrapper
        # (transformers 5.23): the ranks train apart. The 2-process test caught it; skip the "before" there.
        loss_before = trainer.evaluate()["eval_loss"] if world_size() == 1 else None
        last = last_checkpoint(stage.checkpoints)
        if last:
            print(f"resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
        loss_after = trainer.evaluate()["eval_loss"]
    writer.close()
    distributed = in_sync(trainer.model)
    if not is_main():
        return {"distributed": distributed}

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    policy, merge_diff = merge_lora(trainer.model, tokenizer)  # a plain model under LoRA too
    save_checkpoint(policy, tokenizer, stage.model)

    policy = for_inference(policy)  # answers as every later stage's SFT does (no autocast left on by the trainer)
    sft_eval = answer_and_judge(policy, tokenizer, eval_prompts, cfg.eval.max_new_tokens)
    train_tokens = sum(map(len, trainer.train_dataset["input_ids"]))
    steps_per_epoch = -(-len(train_rows) // (cfg.train.batch_size * cfg.train.grad_accum))
    trained_steps = trainer.state.global_step - (int(Path(last).name.split("-")[-1]) if last else 0)
    metrics = {
        "params": count_params(policy),
        "trainable_params": trainable,
        "lora": cfg.lora.enabled,
        "lora_merge_max_abs_logit_diff": merge_diff,
        "rows": {"demonstrations": n_demos, "corrections": len(rows) - n_demos, "skipped": skipped,
                 "pretraining_documents": len(texts)},
        "steps": trainer.state.global_step,
        "resumed_from": last,
        "epochs": round(trainer.state.global_step / steps_per_epoch, 3),
        "train_tokens_per_epoch": train_tokens,
        "train_tokens_per_s": round(train_tokens * trained_steps / steps_per_epoch / result.metrics["train_runtime"]),
        "train_runtime_s": round(result.metrics["train_runtime"], 2),
        "final_train_loss": round(result.metrics.get("train_loss", float("nan")), 4),
        "heldout_loss_before": round(loss_before, 4) if loss_before is not None else None,
        "heldout_loss_after": round(loss_after, 4),
        "task_eval": {"decoding": str(Decoding(max_new_tokens=cfg.eval.max_new_tokens)), "base": base_eval,
                      "sft": sft_eval},
        "numerics": numerics.record(),
        "distributed": distributed,
        "samples": sample_chats(policy, tokenizer, prompts, cfg.eval.sample_chats, cfg.seed, cfg.eval.max_new_tokens),
    }
    stage.finish(metrics)
    print(f"SFT correct {sft_eval['correct']:.1%} (base {base_eval['correct']:.1%}); held-out loss "
          f"{loss_before if loss_before is not None else float('nan'):.3f} -> {loss_after:.3f}; "
          f"{metrics['train_tokens_per_s']:,} tok/s")
    return metrics


if __name__ == "__main__":
    cli(main, SFTStageConfig, {"model": "base checkpoint directory (the pretrain stage's model/)",
                               "data": "chat demonstrations (jsonl/parquet, or hf:<dataset>)",
                               "heldout_prompts": "held-out prompt rows with reference answers",
                               "out": "stage output directory",
                               "corrections": "annotators' corrected replies exported by the labeling app (optional)",
                               "corpus": "pretraining text mixed in when data.pretrain_mix > 0 (optional)"},
        __doc__, optional=("corrections", "corpus"))
