"""RLOO / GRPO: critic-free alignment against the reward model, with TRL's RLOOTrainer or GRPOTrainer.

Run:    make rloo                        (method: rloo | grpo in configs/<scale>/rloo.yaml)
        python -m rlhf.rloo --config configs/tiny/rloo.yaml --model runs/tiny/sft/model \
            --reward-model runs/tiny/reward/model --prompts runs/tiny/world/prompts_train.jsonl \
            --heldout-prompts runs/tiny/world/prompts_heldout.jsonl --out runs/tiny/rloo [method=grpo ...]
Reads:  the SFT checkpoint (policy; TRL keeps its own frozen reference when beta > 0); the reward model
        (the reward function); training prompt rows; held-out prompt rows (evaluation only)
Writes: <out>/model (HF checkpoint), <out>/checkpoints, config.yaml, metrics.json, logs/, DONE (last)

Both sample `num_generations` answers per prompt and use the group as the baseline (RLOO: the mean
of the other answers; GRPO: the group mean and standard deviation), so no value model is trained:
the comparison point for the project's PPO. The effect is measured as for DPO and PPO.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.annotator import first_per_task
from core.artifacts import StageDir
from core.compare import EvalSettings, policy_vs_reference, print_report
from core.config import UserError, cli
from core.data import PromptSource, fit_prompts, load_prompts, load_rows
from core.distributed import in_sync, is_main, per_process_threads
from core.model import context_length, load_causal_lm, save_checkpoint
from core.reward import ensemble_inputs, load_reward_ensemble
from core.tokenizer import check_chat_contract, load_tokenizer
from core.precision import apply as apply_precision
from core.training import (KLGuardSettings, LoraSettings, TrainSettings, kl_guard, last_checkpoint, lora_config,
                           merge_lora, trl_args)


@dataclass
class RLOOStageConfig:
    seed: int = 0
    method: str = "rloo"               # rloo | grpo
    prompts: int = 512                 # training prompts used (0 = all)
    num_generations: int = 4           # answers per prompt (the group)
    max_new_tokens: int = 48
    temperature: float = 1.0
    beta: float = 0.05                 # KL penalty to the SFT reference (0 = none, no reference model)
    lora: LoraSettings = field(default_factory=LoraSettings)  # as DPO's: which weights the reward may move
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=1.0, lr=2e-5, batch_size=16))
    guards: KLGuardSettings = field(default_factory=KLGuardSettings)  # KL budget (core.training.kl_guard)
    eval: EvalSettings = field(default_factory=EvalSettings)
    prompt_source: PromptSource = field(default_factory=PromptSource)  # which columns of --prompts hold what

    def validate(self) -> None:
        if self.method not in ("rloo", "grpo"):
            raise UserError(f"method must be rloo or grpo, got {self.method!r}")
        if self.num_generations < 2 or self.train.batch_size % self.num_generations:
            raise UserError(f"num_generations must be >= 2 and divide train.batch_size ({self.train.batch_size}), "
                            f"got {self.num_generations}")


def main(cfg: RLOOStageConfig, model: str, reward_model: str, prompts: str, heldout_prompts: str, out: str) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    tok = load_tokenizer(model)
    check_chat_contract(tok, f"{model} tokenizer")
    members = load_reward_ensemble(reward_model, tok, model)  # one model, or the reward stage's ensemble
    rows = fit_prompts(load_prompts(prompts, cfg.prompt_source, "prompt_source"), tok, context_length(model),
                       cfg.max_new_tokens, cfg.prompt_source, prompts, "prompt_source")
    rows = rows[: cfg.prompts] if cfg.prompts > 0 else rows
    eval_prompts = first_per_task(load_rows(heldout_prompts), cfg.eval.per_task)
    stage = StageDir(out)
    stage.start(cfg, inputs={"model_weights": Path(model) / "model.safetensors",
                             **ensemble_inputs(reward_model), "prompts": prompts},
                resume_state=("checkpoints",), stage_file=__file__)
    torch.set_num_threads(cfg.train.threads or per_process_threads())

    config_cls, trainer_cls = (RLOOConfig, RLOOTrainer) if cfg.method == "rloo" else (GRPOConfig, GRPOTrainer)
    known = {f.name for f in dataclasses.fields(config_cls)}
    policy, reference = load_causal_lm(model), load_causal_lm(model).eval()
    numerics = apply_precision(cfg.train.precision, policy, reference)
    # Only the shared knobs these configs know (they bound the answer, not the whole sequence, by length).
    common = {k: v for k, v in trl_args(cfg.train, cfg.seed, stage.checkpoints, numerics.bf16).items() if k in known}
    common["train_sampling_strategy"] = "random"  # length grouping needs input_ids; these rows are prompts
    args = config_cls(**common, num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
                      temperature=cfg.temperature, beta=cfg.beta, reward_weights=[1 / len(members)] * len(members))
    guard = kl_guard(cfg.guards, reference, tok, [r["messages"] for r in rows], cfg.seed)
    tok.padding_side = "left"  # generation pads on the left
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        trainer = trainer_cls(model=policy, reward_funcs=[m for m, _ in members], args=args, processing_class=tok,
                              reward_processing_classes=[t for _, t in members],
                              peft_config=lora_config(cfg.lora, policy.config.num_hidden_layers),
                              train_dataset=Dataset.from_list([{"prompt": r["messages"]} for r in rows]),
                              callbacks=[guard] if guard else None)
        last = last_checkpoint(stage.checkpoints)
        result = trainer.train(resume_from_checkpoint=last)
    tok.padding_side = "right"
    distributed = in_sync(trainer.model)
    if not is_main():
        return {"distributed": distributed}
    logged = [h for h in trainer.state.log_history if "reward" in h]

    policy, merge_diff = merge_lora(trainer.model, tok)  # a plain model under LoRA too
    save_checkpoint(policy, tok, stage.model)
    effect = policy_vs_reference(policy.eval(), reference, tok, eval_prompts, cfg.eval, cfg.seed)
    metrics = {"method": cfg.method, "prompts": len(rows), "steps": trainer.state.global_step, "resumed_from": last,
               "lora": cfg.lora.enabled, "lora_merge_max_abs_logit_diff": merge_diff,
               "train_runtime_s": round(result.metrics["train_runtime"], 2),
               "reward_first_logged": round(logged[0]["reward"], 4) if logged else None,
               "reward_last_logged": round(logged[-1]["reward"], 4) if logged else None,
               "vs_sft": effect, "guards": guard.report() if guard else None, "numerics": numerics.record(), "distributed": distributed}
    stage.finish(metrics)
    print_report(cfg.method.upper(), effect)
    return metrics


if __name__ == "__main__":
    cli(main, RLOOStageConfig, {"model": "SFT checkpoint directory", "reward_model": "reward model checkpoint",
                                "prompts": "training prompt rows", "heldout_prompts": "held-out prompt rows (evaluation)",
                                "out": "stage output directory"}, __doc__)
