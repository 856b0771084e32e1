"""DPO: align the SFT policy directly on the preference pairs, with TRL's DPOTrainer.

Run:    make dpo
        python -m rlhf.dpo --config configs/tiny/dpo.yaml --model runs/tiny/sft/model \
            --train runs/tiny/prefs/train.jsonl --heldout-prompts runs/tiny/world/prompts_heldout.jsonl \
            --out runs/tiny/dpo [--test runs/tiny/prefs/test.jsonl] [beta=0.1 loss_type=ipo ...]
Reads:  the SFT checkpoint (the policy to align, and the frozen reference); preference pairs
        (TRL conversational rows from `make export`); held-out prompt rows (evaluation only); with
        --test, the reward model's held-out pairs
Writes: <out>/model (HF checkpoint; a LoRA run is merged), <out>/checkpoints (resume state),
        config.yaml, metrics.json, logs/ (tensorboard), DONE (last)

Loss (`loss_type`): sigmoid (the DPO paper), ipo, or robust (sigmoid with label smoothing: the share
of pairs assumed mislabeled); `sft_weight` adds the chosen answers' negative log-likelihood (RPO),
which kept the weakest skill (story lookups) from eroding while the preference term moved the style.
beta sets how far the policy may move from the reference, and `divergence` how that distance is measured
(f-DPO, Wang et al. 2023): reverse_kl is the DPO paper's; under forward_kl a reply's score is
1 - pi_SFT / pi, which saturates once a rejected reply is unlikely enough, so the policy stops pushing it
down (on the tiny world: sums kept, a third of the KL; docs/evaluation.md). The code's defaults are gentle
(lr 1e-4, one epoch, beta 0.1): a prototype of this chain collapsed to one generic answer at higher settings
while its training metrics looked healthy, so the evaluation here watches correctness, answer diversity and KL,
not only the win rate (core/compare.py).

With --test, the trained policy's implicit reward (beta * log pi / pi_SFT over a reply's tokens, in the
divergence's form) is scored on the held-out pairs the reward model is scored on, split the same way
(metrics.json `implicit_reward_test`): the two ways of learning the same labels, side by side.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.annotator import first_per_task
from core.artifacts import StageDir
from core.compare import EvalSettings, policy_vs_reference, print_report
from core.config import UserError, cli
from core.data import PreferenceColumns, load_preferences, load_rows
from core.distributed import in_sync, is_main, per_process_threads, world_size
from core.model import load_causal_lm, save_checkpoint
from core.reward import IMPLIED, accuracy_report, implicit_pair_scores, pair_token_ids
from core.tokenizer import check_chat_contract, load_tokenizer
from core.precision import apply as apply_precision
from core.training import (KLGuardSettings, LoraSettings, TrainSettings, kl_guard, last_checkpoint, lora_config,
                           merge_lora, preference_dataset, trl_args)

LOSSES = {"sigmoid": "sigmoid", "ipo": "ipo", "robust": "robust"}


@dataclass
class DPOStageConfig:
    seed: int = 0
    beta: float = 0.1
    loss_type: str = "sigmoid"         # sigmoid | ipo | robust
    label_smoothing: float = 0.0       # robust only: assumed share of flipped labels
    divergence: str = "reverse_kl"     # reverse_kl (the DPO paper) | forward_kl | js_divergence
    # Weight of a negative log-likelihood term on the chosen answers (RPO, Pang et al. 2024; 0 = plain DPO):
    # keeps what the preferred answers get right likely while the preference term moves the style.
    sft_weight: float = 0.0
    # Tasks whose capability pairs (`kind: capability` in exported pairs: the annotators' rubric found one reply right
    # and the other wrong) DPO leaves to the reward model. A pair whose replies differ in one copied word (a story set
    # at another place) cannot teach a small policy to copy: it learns to avoid the rejected word, and loses copies
    # elsewhere (docs/evaluation.md). Pairs without a task or kind (hub data) are always kept.
    skip_capability_tasks: list[str] = field(default_factory=list)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=1.0, lr=1e-4, batch_size=16))
    guards: KLGuardSettings = field(default_factory=KLGuardSettings)  # KL budget (core.training.kl_guard)
    eval: EvalSettings = field(default_factory=EvalSettings)
    columns: PreferenceColumns = field(default_factory=PreferenceColumns)  # hub datasets: which column is what

    def validate(self) -> None:
        if self.loss_type not in LOSSES:
            raise UserError(f"loss_type must be one of {', '.join(LOSSES)}, got {self.loss_type!r}")
        if self.divergence not in IMPLIED:
            raise UserError(f"divergence must be one of {', '.join(IMPLIED)}, got {self.divergence!r}")
        if self.beta <= 0:
            raise UserError(f"beta must be positive, got {self.beta}")
        if self.sft_weight < 0:
            raise UserError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if not 0 <= self.label_smoothing < 0.5 or (self.label_smoothing and self.loss_type != "robust"):
            raise UserError("label_smoothing must be in [0, 0.5) and is used by loss_type=robust only")


def main(cfg: DPOStageConfig, model: str, train: str, heldout_prompts: str, out: str,
         test: str | None = None) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(model)
    check_chat_contract(tokenizer, f"{model} tokenizer")
    rows = load_preferences(train, cfg.columns)
    left = [r.get("kind") == "capability" and r.get("task") in cfg.skip_capability_tasks for r in rows]
    skipped = Counter(r["task"] for r, x in zip(rows, left) if x)
    if skipped:
        rows = [r for r, x in zip(rows, left) if not x]
        if not rows:
            raise UserError(f"{train}: every pair is a capability pair of skip_capability_tasks; empty that list")
        print(f"DPO trains on {len(rows)} pairs; left to the reward model (skip_capability_tasks): "
              + ", ".join(f"{n} capability pairs of {t}" for t, n in sorted(skipped.items())))
    test_rows, test_ids = (load_preferences(test, cfg.columns) if test else []), []
    try:
        test_ids = pair_token_ids(tokenizer, test_rows)
    except UserError as e:  # a diagnostic, not the stage's job: train anyway and say why it is missing
        print(f"DPO's implicit reward will not be scored: {e}")
        test_rows = []
    prompts = first_per_task(load_rows(heldout_prompts), cfg.eval.per_task)
    if not prompts or not {"messages", "task"} <= prompts[0].keys():
        raise UserError(f"{heldout_prompts}: need prompt rows with 'messages' and 'task' (from `make world`)")
    stage = StageDir(out)
    stage.start(cfg, inputs={"model_weights": Path(model) / "model.safetensors", "train": train,
                             "heldout_prompts": heldout_prompts, **({"test": test} if test else {})}, resume_state=("checkpoints",), stage_file=__file__)
    torch.set_num_threads(cfg.train.threads or per_process_threads())

    policy, reference = load_causal_lm(model), load_causal_lm(model).eval()
    numerics = apply_precision(cfg.train.precision, policy, reference)
    # remove_unused_columns off: the sampler reads preference_dataset's `length`, the collator takes its own keys.
    args = DPOConfig(**trl_args(cfg.train, cfg.seed, stage.checkpoints, numerics.bf16), remove_unused_columns=False,
                     beta=cfg.beta, label_smoothing=cfg.label_smoothing, f_divergence_type=cfg.divergence,
                     loss_type=[LOSSES[cfg.loss_type]] + (["sft"] if cfg.sft_weight else []),
                     loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight else None,
                     disable_dropout=True,
                     # The frozen reference scores every pair once, not once per epoch (2 epochs: 55 -> 41 s on a
                     # CPU). One process only: TRL 1.16 caches the scores in rank 0's temporary directory, which
                     # the other ranks of an in-memory dataset cannot read.
                     precompute_ref_log_probs=world_size() == 1)
    writer = SummaryWriter(str(stage.logs))
    guard = kl_guard(cfg.guards, reference, tokenizer, [r["prompt"] for r in rows], cfg.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        trainer = DPOTrainer(model=policy, ref_model=None, args=args, processing_class=tokenizer,
                             train_dataset=preference_dataset(tokenizer, rows),
                             peft_config=lora_config(cfg.lora, policy.config.num_hidden_layers),
                             callbacks=[TensorBoardCallback(writer)] + ([guard] if guard else []))
        last = last_checkpoint(stage.checkpoints)
        if last:
            print(f"resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
    writer.close()
    distributed = in_sync(trainer.model)
    if not is_main():
        return {"distributed": distributed}
    logs = [h for h in trainer.state.log_history if "rewards/accuracies" in h]

    policy, merge_diff = merge_lora(trainer.model, tokenizer)  # a plain model under LoRA too
    save_checkpoint(policy, tokenizer, stage.model)
    effect = policy_vs_reference(policy.eval(), reference, tokenizer, prompts, cfg.eval, cfg.seed)
    implicit = accuracy_report(test_rows, implicit_pair_scores(policy, reference, tokenizer.pad_token_id, test_ids,
                                                               cfg.beta, cfg.divergence)) if test_rows else None
    metrics = {
        "pairs": len(rows), "capability_pairs_skipped": dict(sorted(skipped.items())),
        "steps": trainer.state.global_step, "resumed_from": last,
        "beta": cfg.beta, "loss_type": cfg.loss_type, "divergence": cfg.divergence, "sft_weight": cfg.sft_weight,
        "lora": cfg.lora.enabled,
        "lora_merge_max_abs_logit_diff": merge_diff,
        "train_runtime_s": round(result.metrics["train_runtime"], 2),
        "final_train_loss": round(result.metrics.get("train_loss", float("nan")), 4),
        "last_logged": {k: round(v, 4) for k, v in logs[-1].items() if isinstance(v, float)} if logs else None,
        "vs_sft": effect,
        "guards": guard.report() if guard else None,
        "implicit_reward_test": implicit,
        "numerics": numerics.record(),
        "distributed": distributed,
    }
    stage.finish(metrics)
    print_report("DPO", effect)
    if implicit:
        kinds = "".join(f", {k} {v['accuracy']:.1%}" for k, v in implicit["by_kind"].items())
        kinds += "".join(f", capability ({k}) {v['accuracy']:.1%}"
                         for k, v in sorted(implicit["capability_by_style"].items(), reverse=True))
        print(f"DPO's implicit reward on {implicit['pairs']} held-out pairs: accuracy {implicit['accuracy']:.1%}{kinds}")
    return metrics


if __name__ == "__main__":
    cli(main, DPOStageConfig, {"model": "SFT checkpoint directory (policy and frozen reference)",
                               "train": "preference pairs (jsonl/parquet, or hf:<dataset>)",
                               "heldout_prompts": "held-out prompt rows (evaluation)",
                               "out": "stage output directory",
                               "test": "held-out preference pairs: score the policy's implicit reward on them (optional)"},
        __doc__, optional=("test",))
