"""Knobs and arguments every TRL-trained stage shares (SFT, reward, DPO, RLOO): one place, same names.
LoRA too: a LoRA run is merged before saving, so every stage's artifact is a plain checkpoint. And the KL guard
that DPO and RLOO share with PPO's: a policy that ends past its KL budget from SFT goes back to its last check within it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.config import UserError
from core.model import own_forward
from core.precision import check as check_precision


@dataclass
class TrainSettings:
    epochs: float = 4.0
    max_steps: int = -1                # > 0 overrides epochs
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 256              # tokens per conversation; longer rows are errors (or skipped)
    group_by_length: bool = True       # batches of similar length: less padding on CPU
    precision: str = "auto"            # auto | fp32 | fp32-onednn | bf16: core/precision.py
    activation_checkpointing: bool = False
    log_every: int = 10
    save_every: int = 50               # resume-state checkpoints every this many steps
    keep_checkpoints: int = 2
    threads: int = 0                   # 0 = all cores

    def validate(self) -> None:
        check_precision(self.precision, "train.precision")
        for name in ("batch_size", "grad_accum", "max_length", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("train.epochs or train.max_steps must be positive")


def trl_args(t: TrainSettings, seed: int, out, bf16: bool) -> dict:
    """Keyword arguments common to TRL's configs (SFTConfig, RewardConfig, DPOConfig), CPU-safe.

    TRL defaults to bf16 and activation checkpointing; both are off unless asked for: bf16 is what
    train.precision resolved to (core/precision.py), since on a CPU without AMX / avx512_bf16 it is
    emulated and many times slower, and on CPU it fails without use_cpu.
    """
    return dict(
        output_dir=str(out), seed=seed, num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size * 2,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, max_length=t.max_length,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        use_cpu=not torch.cuda.is_available(), bf16=bf16, activation_checkpointing=t.activation_checkpointing,
        logging_steps=t.log_every, save_strategy="steps", save_steps=t.save_every, save_total_limit=t.keep_checkpoints,
        eval_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=False,
        ddp_find_unused_parameters=False)  # every parameter gets a gradient; the search only costs time


def last_checkpoint(checkpoints) -> str | None:
    """The newest Trainer checkpoint under `checkpoints` (a Path), or None."""
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


@dataclass
class LoraSettings:
    enabled: bool = False              # false = full fine-tuning
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    layers: list[int] = field(default_factory=list)   # decoder layers to adapt, counted from 0; [] = all

    def validate(self) -> None:
        if any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise UserError(f"lora.layers must be distinct layer indices >= 0 (or [] for all), got {self.layers}")


def lora_config(cfg: LoraSettings, num_layers: int, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig for a model with `num_layers` decoder layers, or None for full fine-tuning."""
    if not cfg.enabled:
        return None
    if cfg.layers and max(cfg.layers) >= num_layers:
        raise UserError(f"lora.layers {cfg.layers}: the model has {num_layers} decoder layers (0-{num_layers - 1}); "
                        "pick among those, or [] for all")
    from peft import LoraConfig
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                      layers_to_transform=list(cfg.layers) or None, task_type=task_type)


def merge_lora(peft_model, tokenizer) -> tuple[torch.nn.Module, float | None]:
    """Fold the adapters into the weights; returns the plain model and the largest logit change it caused
    (a model without adapters comes back as it is, with None)."""
    from peft import PeftModel
    if not isinstance(peft_model, PeftModel):
        return peft_model, None
    probe = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                           {"role": "assistant", "content": "2 plus 3 is 5."}],
                                          tokenize=True, return_dict=True, return_tensors="pt")["input_ids"]
    own_forward(peft_model).eval()  # both sides in fp32: under bf16 the trainer's autocast would differ by ~2e-3
    with torch.no_grad():
        before = peft_model(input_ids=probe).logits
        merged = peft_model.merge_and_unload()
        after = merged(input_ids=probe).logits
    return merged, (before - after).abs().max().item()


def preference_dataset(tokenizer, rows: list[dict]):
    """Preference rows as a `datasets.Dataset` for TRL's reward and DPO trainers, with a `length` column: the
    tokens of the longer of prompt + chosen and prompt + rejected. With `train.group_by_length` the Trainer's
    length-grouped sampler reads it, so a batch holds pairs of similar length; in random batches of the tiny
    world's pairs 48 % of the tokens were padding."""
    from datasets import Dataset

    def tokens(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return Dataset.from_list([{**{k: r[k] for k in ("prompt", "chosen", "rejected")},
                               "length": max(tokens(r["prompt"] + r["chosen"]), tokens(r["prompt"] + r["rejected"]))}
                              for r in rows])


@dataclass
class KLGuardSettings:
    """The `guards:` section of DPO and RLOO, PPO's `guards.kl_budget` for the TRL-trained stages: every `every` steps
    and at the end, the policy answers `prompts` training prompts at temperature 1 and its KL to SFT is estimated
    (core.compare). Training runs to its end; if the last check is past the budget, the weights go back to the last
    check within it (the starting weights if none was). A check past the budget mid-way does not stop it: DPO's
    seed 1 on the default world sampled noise for a while at its peak step size (KL 18.6 nats at step 72 of 216)
    and came back to 1.4 by the end; only what the stage hands on has to be within the budget."""
    kl_budget: float = 12.0            # nats per answer, KL(policy || SFT); 0 = no guard
    every: int = 50                    # steps between checks
    prompts: int = 64
    max_new_tokens: int = 48

    def validate(self) -> None:
        if self.kl_budget < 0 or self.every <= 0 or self.prompts <= 0 or self.max_new_tokens <= 0:
            raise UserError("guards.kl_budget must be >= 0 (0 = off), guards.every, guards.prompts and "
                            "guards.max_new_tokens positive")


def kl_guard(settings: KLGuardSettings, reference, tokenizer, conversations: list[list[dict]], seed: int):
    """A TrainerCallback enforcing `settings` against `reference` on these training conversations (None when off).
    Its `report()` is what metrics.json keeps: the checks made and the guard, if it fired."""
    if not settings.kl_budget:
        return None
    from transformers import TrainerCallback

    from core.compare import kl_to_reference
    from core.distributed import mean_over_ranks
    distinct = {repr(c): c for c in conversations}    # a prompt once, however many pairs it has
    prompts = [{"messages": c} for c in list(distinct.values())[:settings.prompts]]

    class KLGuard(TrainerCallback):
        def __init__(self):
            self.checks, self.fired, self.last_good, self.good_step, self.skipped = [], None, None, 0, None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.last_good = None if self.sharded(model) else _trainable(model)
            self.good_step = state.global_step

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % settings.every == 0 or state.global_step >= state.max_steps:
                if not self.sharded(model):
                    kl = kl_to_reference(model, reference, tokenizer, prompts, settings.max_new_tokens, seed,
                                         cached=False)["kl_per_sequence"]
                    kl = round(mean_over_ranks(kl)[0], 4)  # every rank takes the same decision
                    self.checks.append({"step": state.global_step, "kl": kl})
                    if kl <= settings.kl_budget:
                        self.last_good, self.good_step = _trainable(model), state.global_step

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if not self.checks or self.checks[-1]["kl"] <= settings.kl_budget:
                return
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in self.last_good:
                        p.copy_(self.last_good[name])
            self.fired = {"guard": "kl_budget", **self.checks[-1], "budget": settings.kl_budget,
                          "rolled_back_to_step": self.good_step}
            print(f"guard fired: KL to SFT {self.fired['kl']:.2f} nats per answer at the end, over the budget of "
                  f"{settings.kl_budget}; the weights of step {self.good_step} (the last within it) are kept")

        def sharded(self, model) -> bool:
            """Sharded weights (FSDP2, ZeRO-3) answer only in step across the ranks: not checked there."""
            if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") for p in model.parameters()):
                self.skipped = "parameters sharded across processes (FSDP, ZeRO-3): not checked"
            return self.skipped is not None

        def report(self) -> dict:
            return {"kl_budget": settings.kl_budget, "checks": self.checks, "guard": self.fired,
                    **({"skipped": self.skipped} if self.skipped else {})}

    return KLGuard()


def _trainable(model) -> dict:
    """The weights training moves, copied to the CPU (a GPU keeps its memory for training)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
