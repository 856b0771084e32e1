"""Reward: train a reward model on the exported preference pairs, with TRL's RewardTrainer.

Run:    make reward
        python -m reward.train --config configs/tiny/reward.yaml --model runs/tiny/sft/model \
            --train runs/tiny/prefs/train.jsonl --test runs/tiny/prefs/test.jsonl --out runs/tiny/reward \
            [--heldout-prompts runs/tiny/world/prompts_heldout.jsonl] [train.epochs=1 ...]
Reads:  the SFT checkpoint (the reward model starts from it: same tokenizer, same chat template);
        preference pairs (TRL conversational rows from `make export`; standard-text and HH-style rows load too)
Writes: <out>/model (AutoModelForSequenceClassification, one output, pad_token_id set; stock transformers
        loads it), <out>/ensemble/<i> (more members, when ensemble > 1), <out>/checkpoints (resume state), config.yaml, metrics.json, logs/ (tensorboard), DONE (last)

The model reads its score at the last real token of prompt + response (the assistant's EOS). The
loss is TRL's pairwise -log sigmoid(r_chosen - r_rejected), plus a small pull of rewards toward 0
(train.center_rewards) so scores stay comparable across prompts. metrics.json: held-out pair
accuracy and mean margin, overall, per task and by how much the annotators agreed on the pair, next
to the annotators' own agreement and the label ceiling (the annotators' rubric without its noise
scored on the same held-out labels: what a perfect model of their preferences would reach), and capability
pairs split by whether style points the same way as correctness (a reward model that learned the style but
cannot check the task orders the "style against" ones backwards); train
accuracy for comparison; and the best-of-n baseline: the SFT policy samples n answers per held-out
prompt, the reward model picks one, and the scripted annotator compares the pick with the first
sample (if this does not win, RL against this reward model cannot be expected to).
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.artifacts import StageDir
from core.config import UserError, cli
from core.annotator import first_per_task
from core.compare import best_of_n
from core.data import PreferenceColumns, load_preferences, load_rows
from core.distributed import in_sync, is_main, per_process_threads
from core.model import load_causal_lm, to_inference_device
from core.reward import accuracy_report, reward_scores
from core.tokenizer import check_chat_contract, load_tokenizer
from core.precision import apply as apply_precision
from core.training import TrainSettings, last_checkpoint, preference_dataset, trl_args


@dataclass
class BestOfNSettings:
    per_task: int = 50                 # held-out prompts per task (0 = skip the baseline)
    n: int = 4
    temperature: float = 0.7
    max_new_tokens: int = 64


@dataclass
class RewardStageConfig:
    seed: int = 0
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=2.0, lr=5e-4))
    center_rewards: float = 0.01       # weight of mean(r^2) in the loss; 0 = off
    # Reward models trained (seeds seed, seed+1, ...: their own head init and batch order). Member 0
    # is <out>/model, the one every later stage uses; the others go to <out>/ensemble/<i> and join
    # it when `make seed` scores candidates for active sampling (mean score; their spread is reported).
    ensemble: int = 1
    best_of_n: BestOfNSettings = field(default_factory=BestOfNSettings)
    columns: PreferenceColumns = field(default_factory=PreferenceColumns)  # hub datasets: which column is what

    def validate(self) -> None:
        if self.center_rewards < 0:
            raise UserError(f"center_rewards must be >= 0, got {self.center_rewards}")
        if self.ensemble < 1:
            raise UserError(f"ensemble must be >= 1 (reward models to train), got {self.ensemble}")


def pair_scores(model, tokenizer, rows: list[dict], batch_size: int = 64) -> list[tuple[float, float]]:
    """(r_chosen, r_rejected) for each preference row."""
    convs = [r["prompt"] + r[side] for r in rows for side in ("chosen", "rejected")]
    s = reward_scores(model, tokenizer, convs, batch_size)
    return list(zip(s[0::2], s[1::2]))


def ensemble_report(rows: list[dict], members: list[list[tuple[float, float]]]) -> dict:
    """Each member's held-out accuracy, the accuracy of their mean score, and how much they disagree."""
    mean = [(sum(m[i][0] for m in members) / len(members), sum(m[i][1] for m in members) / len(members))
            for i in range(len(rows))]
    margins = torch.tensor([[c - r for c, r in m] for m in members])        # [members, pairs]
    split = ((margins > 0).float().mean(0) * (margins <= 0).float().mean(0) > 0).float().mean()
    return {"members": len(members), "member_accuracy": [accuracy_report(rows, m)["accuracy"] for m in members],
            "mean_score_accuracy": accuracy_report(rows, mean)["accuracy"],
            "pairs_members_disagree_on": round(float(split), 3),
            "mean_margin_std": round(float(margins.std(0).mean()), 3)}


def train_member(cfg: RewardStageConfig, seed: int, model: str, tokenizer, train_rows: list[dict], out: Path,
                 checkpoints: Path, writer) -> tuple:
    """Train one reward model from the SFT checkpoint and save it to `out`; resumes from `checkpoints`."""
    from transformers import AutoModelForSequenceClassification
    from transformers.integrations import TensorBoardCallback
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(seed)  # the score head's initialisation
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(is_gradient_checkpointing|newly initialized).*")
        rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    rm.config.pad_token_id = tokenizer.pad_token_id
    numerics = apply_precision(cfg.train.precision, rm)
    # remove_unused_columns off: the sampler reads preference_dataset's `length`, the collator takes its own keys.
    args = RewardConfig(**trl_args(cfg.train, seed, checkpoints, numerics.bf16), remove_unused_columns=False,
                        disable_dropout=True, center_rewards_coefficient=cfg.center_rewards or None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        trainer = RewardTrainer(model=rm, args=args, processing_class=tokenizer,
                                train_dataset=preference_dataset(tokenizer, train_rows),
                                callbacks=[TensorBoardCallback(writer)])
        last = last_checkpoint(checkpoints)
        if last:
            print(f"resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
    rm = trainer.model.eval()
    if is_main():
        rm.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return rm, trainer.state.global_step, last, result, numerics


def main(cfg: RewardStageConfig, model: str, train: str, test: str, out: str,
         heldout_prompts: str | None = None) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(model)
    check_chat_contract(tokenizer, f"{model} tokenizer")
    train_rows, test_rows = load_preferences(train, cfg.columns), load_preferences(test, cfg.columns)
    stage = StageDir(out)
    stage.start(cfg, inputs={"model_weights": Path(model) / "model.safetensors", "train": train, "test": test},
                resume_state=("checkpoints",), stage_file=__file__)
    torch.set_num_threads(cfg.train.threads or per_process_threads())
    shutil.rmtree(stage.root / "ensemble", ignore_errors=True)  # members of an earlier run never mix in

    torch.manual_seed(cfg.seed)  # the untrained score head: its accuracy was 39.5 % and 58.9 % in two runs of one command
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(is_gradient_checkpointing|newly initialized).*")
        untrained = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    untrained.config.pad_token_id = tokenizer.pad_token_id
    before = accuracy_report(test_rows, pair_scores(untrained.eval(), tokenizer, test_rows))
    del untrained

    writer = SummaryWriter(str(stage.logs))
    rm, steps, last, result, numerics = train_member(cfg, cfg.seed, model, tokenizer, train_rows, stage.model,
                                           stage.checkpoints, writer)
    distributed = in_sync(rm)
    members = [pair_scores(rm, tokenizer, test_rows)] if is_main() else []  # scores only the main process reports
    for i in range(1, cfg.ensemble):
        print(f"ensemble member {i + 1} of {cfg.ensemble}")
        member, *_ = train_member(cfg, cfg.seed + i, model, tokenizer, train_rows, stage.root / "ensemble" / str(i),
                                  stage.checkpoints / f"member{i}", writer)
        if is_main():
            members.append(pair_scores(member, tokenizer, test_rows))
        del member
    writer.close()
    if not is_main():
        return {"distributed": distributed}

    after = accuracy_report(test_rows, members[0])
    train_acc = accuracy_report(train_rows, pair_scores(rm, tokenizer, train_rows))["accuracy"]
    agreement = [r["agreement"] for r in test_rows if "agreement" in r]
    agrees = [r["rubric_agrees"] for r in test_rows if r.get("rubric_agrees") is not None]
    bon = None
    if heldout_prompts and cfg.best_of_n.per_task > 0:
        b = cfg.best_of_n
        bon = best_of_n(to_inference_device(load_causal_lm(model).eval()), tokenizer, rm, tokenizer,
                        first_per_task(load_rows(heldout_prompts), b.per_task), b.n, b.temperature, b.max_new_tokens,
                        cfg.seed)
    metrics = {
        "pairs": {"train": len(train_rows), "test": len(test_rows)},
        "steps": steps,
        "resumed_from": last,
        "train_runtime_s": round(result.metrics["train_runtime"], 2),
        "train_samples_per_s": round(result.metrics.get("train_samples_per_second", 0.0), 1),
        "final_train_loss": round(result.metrics.get("train_loss", float("nan")), 4),
        "train_accuracy": train_acc,
        "test_before_training": before,
        "test": after,
        "annotator_agreement_on_test_pairs": round(sum(agreement) / len(agreement), 3) if agreement else None,
        # The accuracy the annotators' noise allows: their rubric without noise scored on the same labels.
        "label_ceiling": round(sum(agrees) / len(agrees), 3) if agrees else None,
        "best_of_n_vs_sft": bon,
        "ensemble": ensemble_report(test_rows, members) if cfg.ensemble > 1 else None,
        "numerics": numerics.record(),
        "distributed": distributed,
    }
    stage.finish(metrics)
    ceiling = f", label ceiling {metrics['label_ceiling']:.1%}" if metrics["label_ceiling"] is not None else ""
    print(f"reward model: held-out pair accuracy {after['accuracy']:.1%} on {len(test_rows)} pairs{ceiling} "
          f"(untrained {before['accuracy']:.1%}), mean margin {after['mean_margin']:.2f}; train accuracy {train_acc:.1%}")
    for kind, k in after["by_kind"].items():
        print(f"  {kind} pairs: {k['accuracy']:.1%} of {k['pairs']} (label ceiling {k['label_ceiling'] or float('nan'):.1%})")
    if after["capability_by_style"]:
        print("  capability pairs whose more correct reply has the better / the worse style: "
              + " / ".join(f"{k['accuracy']:.1%} of {k['pairs']}"
                           for _, k in sorted(after["capability_by_style"].items(), reverse=True)))
    if metrics["ensemble"]:
        e = metrics["ensemble"]
        print(f"ensemble of {e['members']} (PPO and RLOO reward with their mean): the mean score orders "
              f"{e['mean_score_accuracy']:.1%} (members " + " / ".join(f"{a:.1%}" for a in e["member_accuracy"]) + ")")
    if bon:
        print(f"best-of-{bon['samples_per_prompt']} by the reward model vs one SFT sample: win rate {bon['win_rate']:.1%} "
              f"(95 % CI {bon['ci95'][0]:.1%}-{bon['ci95'][1]:.1%}), correct {bon['correct_a']:.1%} vs {bon['correct_b']:.1%}")
    return metrics


if __name__ == "__main__":
    cli(main, RewardStageConfig, {"model": "SFT checkpoint directory (the reward model starts from it)",
                                  "train": "preference pairs for training (jsonl/parquet, or hf:<dataset>)",
                                  "test": "held-out preference pairs", "out": "stage output directory",
                                  "heldout_prompts": "held-out prompt rows (best-of-n baseline; optional)"},
        __doc__, optional=("heldout_prompts",))
