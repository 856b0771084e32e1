"""PPO: align the SFT policy against the frozen reward model (the project's own PPO; TRL no longer ships one).

Run:    make ppo
        python -m rlhf.ppo --config configs/tiny/ppo.yaml --model runs/tiny/sft/model \
            --reward-model runs/tiny/reward/model --prompts runs/tiny/world/prompts_train.jsonl \
            --heldout-prompts runs/tiny/world/prompts_heldout.jsonl --out runs/tiny/ppo [ppo.steps=10 ...]
Reads:  the SFT checkpoint (policy, and the frozen reference); the reward model (frozen scorer, and the
        starting point of the value model); training prompt rows; held-out prompt rows (evaluation only)
Writes: <out>/model (HF checkpoint), config.yaml, metrics.json (per-step history, which guard fired,
        the effect against SFT), logs/ (tensorboard), DONE (last)

One step: sample responses for a batch of prompts with the generation module; score each full
conversation with the reward model at its last real token (minus a penalty when the response never
reached EOS); per-token reward = -kl_coef * KL(policy || reference) estimate, plus the score on the
last token; GAE on a value model's per-token estimates; whitened advantages; several epochs of
clipped policy and value updates over minibatches. The math is in core/ppo_math.py, each piece
tested by hand. Guards act before each update: when the policy's KL to the reference exceeds
guards.kl_budget, or its mean response length falls below / rises above the configured share of
the first rollout's, the policy is rolled back to the last accepted state and training stops;
metrics.json says which guard fired and when.

Many devices: `make ppo NPROC=8` (accelerate launch with configs/accelerate/ddp.yaml or fsdp.yaml). Each
process samples its own rollout batch (ppo.rollout_batch is per process) from its own prompt draw, and
policy and value gradients are averaged over the processes; the guards act on statistics averaged over
all processes, so every process rolls back and stops at the same step.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.annotator import first_per_task
from core.artifacts import StageDir
from core.compare import EvalSettings, policy_vs_reference, print_report
from core.config import UserError, cli
from core.data import PromptSource, fit_prompts, load_prompts, load_rows
from core.distributed import accelerator_for, in_sync, mean_over_ranks, per_process_threads
from core.generation import Decoding, chat_prompt_ids, generate
from core.model import context_length, load_causal_lm, save_checkpoint
from core.precision import apply as apply_precision, autocast, check as check_precision
from core.ppo_math import adaptive_kl_coef, gae, kl_estimate, masked_mean, policy_loss, token_rewards, value_loss, whiten
from core.reward import ensemble_inputs, ensemble_scores, load_reward_ensemble
from core.tokenizer import check_chat_contract, load_tokenizer
from core.training import LoraSettings, lora_config, merge_lora


@dataclass
class PPOSettings:
    steps: int = 30                    # rollout batches
    rollout_batch: int = 32            # prompts per rollout
    minibatch: int = 16
    ppo_epochs: int = 4
    lr: float = 2e-5
    value_lr: float = 1e-4
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 48
    kl_coef: float = 0.05
    kl_estimator: str = "k1"           # k1 | k3
    adaptive_kl: bool = False
    kl_target: float = 4.0             # per answer, adaptive only
    kl_horizon: int = 320              # samples over which the coefficient may move 20 %
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    whiten_advantages: bool = True
    missing_eos_penalty: float = 1.0
    threads: int = 0
    precision: str = "auto"            # auto | fp32 | fp32-onednn | bf16: picked at start, core/precision.py


@dataclass
class GuardSettings:
    kl_budget: float = 12.0            # nats per answer, KL(policy || SFT) on the current rollout
    min_length_ratio: float = 0.5      # mean response length vs the first rollout's
    max_length_ratio: float = 2.0


@dataclass
class PPOStageConfig:
    seed: int = 0
    ppo: PPOSettings = field(default_factory=PPOSettings)
    guards: GuardSettings = field(default_factory=GuardSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)  # as DPO's and RLOO's: which weights the reward may move
    eval: EvalSettings = field(default_factory=EvalSettings)
    prompt_source: PromptSource = field(default_factory=PromptSource)  # which columns of --prompts hold what

    def validate(self) -> None:
        p = self.ppo
        if p.rollout_batch % p.minibatch:
            raise UserError(f"ppo.rollout_batch ({p.rollout_batch}) must be a multiple of ppo.minibatch ({p.minibatch})")
        if p.kl_estimator not in ("k1", "k3"):
            raise UserError(f"ppo.kl_estimator must be k1 or k3, got {p.kl_estimator!r}")
        if min(p.steps, p.ppo_epochs, p.minibatch, p.max_new_tokens) < 1 or p.temperature <= 0:
            raise UserError("ppo.steps, ppo_epochs, minibatch, max_new_tokens must be >= 1 and temperature > 0")
        check_precision(p.precision, "ppo.precision")


def _batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Right-padded prompt+response ids, attention mask, and for each response token the position whose
    logits predict it (B, T) with the response mask (B, T)."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    width, t_max = max(map(len, seqs)), max(map(len, responses))
    ids = torch.full((len(seqs), width), pad_id)
    attn = torch.zeros_like(ids)
    pos = torch.zeros((len(seqs), t_max), dtype=torch.long)
    tokens = torch.full((len(seqs), t_max), pad_id)
    mask = torch.zeros((len(seqs), t_max))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)], attn[i, :len(p) + len(r)] = torch.tensor(p + r), 1
        pos[i, :len(r)] = torch.arange(len(p) - 1, len(p) + len(r) - 1)
        tokens[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1.0
    return ids, attn, pos, tokens, mask


def response_logprobs(model, ids, attn, pos, tokens) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attn).logits
    picked = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float().log_softmax(-1)
    return picked.gather(-1, tokens[..., None])[..., 0]


class ValueModel(torch.nn.Module):
    """The value head on the reward model's body, as one module whose forward a DDP/FSDP wrapper can see."""

    def __init__(self, critic):
        super().__init__()
        self.critic = critic

    def forward(self, ids, attn, pos) -> torch.Tensor:
        hidden = self.critic.model(input_ids=ids, attention_mask=attn).last_hidden_state
        return self.critic.score(hidden)[..., 0].gather(1, pos).float()


def main(cfg: PPOStageConfig, model: str, reward_model: str, prompts: str, heldout_prompts: str, out: str) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoModelForSequenceClassification

    p = cfg.ppo
    tok = load_tokenizer(model)
    check_chat_contract(tok, f"{model} tokenizer")
    members = load_reward_ensemble(reward_model, tok, model)  # one model, or the reward stage's ensemble
    rows = fit_prompts(load_prompts(prompts, cfg.prompt_source, "prompt_source"), tok, context_length(model),
                       p.max_new_tokens, cfg.prompt_source, prompts, "prompt_source")
    if len(rows) < p.rollout_batch:
        raise UserError(f"{prompts}: {len(rows)} prompts; ppo.rollout_batch needs {p.rollout_batch}")
    eval_prompts = first_per_task(load_rows(heldout_prompts), cfg.eval.per_task)
    stage = StageDir(out)
    stage.start(cfg, inputs={"model_weights": Path(model) / "model.safetensors",
                             **ensemble_inputs(reward_model), "prompts": prompts},
                stage_file=__file__)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(p.threads or per_process_threads())

    policy, reference = load_causal_lm(model), load_causal_lm(model).eval()
    critic = ValueModel(AutoModelForSequenceClassification.from_pretrained(reward_model, dtype=torch.float32))
    scorers = [rm for rm, _ in members]
    for m in (reference, *scorers):
        m.requires_grad_(False)
    numerics = apply_precision(p.precision, policy, reference, critic, *scorers)
    if cfg.lora.enabled:  # adapters on the chosen weights only; merged into a plain checkpoint at the end
        from peft import get_peft_model
        policy = get_peft_model(policy, lora_config(cfg.lora, policy.config.num_hidden_layers))
    accelerator = accelerator_for(numerics.bf16)
    main_process, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    # Fused: one kernel per step for all parameters (on a CPU torch's default loops over them, ~3 s of the stage).
    opt_pi = torch.optim.AdamW([w for w in policy.parameters() if w.requires_grad], lr=p.lr, fused=True)
    opt_v = torch.optim.AdamW(critic.parameters(), lr=p.value_lr, fused=True)
    policy, opt_pi, critic, opt_v = accelerator.prepare(policy, opt_pi, critic, opt_v)
    reference, dev = reference.to(accelerator.device), accelerator.device  # rollouts' tensors live there too
    sampler = accelerator.unwrap_model(policy)  # generation runs on the plain module, no collectives
    rng = random.Random(cfg.seed + 7919 * rank)  # each process draws its own prompts
    writer = SummaryWriter(str(stage.logs)) if main_process else None
    decoding = Decoding(p.temperature, max_new_tokens=p.max_new_tokens)
    kl_coef, first_len, guard, history = p.kl_coef, None, None, []
    last_good = copy.deepcopy(sampler.state_dict())
    t0 = time.time()

    for step in range(p.steps):
        batch = rng.sample(rows, p.rollout_batch)
        prompt_ids = [chat_prompt_ids(tok, r["messages"]) for r in batch]
        first_seed = cfg.seed * 1_000_003 + (step * world + rank) * p.rollout_batch
        comps = generate(sampler, tok, prompt_ids, decoding, row_seeds=[first_seed + i for i in range(len(batch))])
        ids, attn, pos, tokens, mask = (t.to(dev) for t in _batch(prompt_ids, [c.token_ids for c in comps],
                                                                   tok.pad_token_id))
        with torch.no_grad(), autocast(numerics, dev.type):  # the reference and reward model as the policy runs
            policy.eval()
            old_logp = response_logprobs(policy, ids, attn, pos, tokens)
            ref_logp = response_logprobs(reference, ids, attn, pos, tokens)
            old_values = critic(ids, attn, pos)
            convs = [r["messages"] + [{"role": "assistant", "content": c.text}] for r, c in zip(batch, comps)]
            raw = torch.tensor(ensemble_scores(members, convs), device=dev)
            score = raw - p.missing_eos_penalty * torch.tensor([0.0 if c.finished else 1.0 for c in comps], device=dev)
            kl = kl_estimate(old_logp, ref_logp, p.kl_estimator) * mask
            rewards = token_rewards(score, kl, mask, kl_coef)
            adv, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
            if p.whiten_advantages:
                adv = whiten(adv, mask)
        seq_kl, mean_len, mean_score, eos_rate = mean_over_ranks(
            kl.sum(1).mean().item(), mask.sum(1).mean().item(), raw.mean().item(),
            sum(c.finished for c in comps) / len(comps))
        first_len = first_len or mean_len
        # Guards act on the policy that produced this rollout, before it is updated further.
        if seq_kl > cfg.guards.kl_budget:
            guard = {"guard": "kl_budget", "step": step, "kl": round(seq_kl, 3), "budget": cfg.guards.kl_budget}
        elif not cfg.guards.min_length_ratio * first_len <= mean_len <= cfg.guards.max_length_ratio * first_len:
            guard = {"guard": "length", "step": step, "mean_length": round(mean_len, 1),
                     "first_length": round(first_len, 1)}
        if guard:
            sampler.load_state_dict(last_good)
            print(f"guard fired at step {step}: {guard}; rolled back to the last accepted policy and stopped")
            break
        last_good = copy.deepcopy(sampler.state_dict())

        policy.train(), critic.train()
        stats = []
        for _ in range(p.ppo_epochs):
            order = torch.randperm(p.rollout_batch)
            for mb in order.split(p.minibatch):
                logp = response_logprobs(policy, ids[mb], attn[mb], pos[mb], tokens[mb])
                pl, clipfrac = policy_loss(logp, old_logp[mb], adv[mb], mask[mb], p.clip)
                opt_pi.zero_grad()
                accelerator.backward(pl)
                accelerator.clip_grad_norm_(policy.parameters(), p.max_grad_norm)
                opt_pi.step()
                vl = value_loss(critic(ids[mb], attn[mb], pos[mb]), old_values[mb], returns[mb], mask[mb], p.value_clip)
                opt_v.zero_grad()
                accelerator.backward(vl)
                accelerator.clip_grad_norm_(critic.parameters(), p.max_grad_norm)
                opt_v.step()
                stats.append((pl.item(), vl.item(), clipfrac.item()))
        if p.adaptive_kl:
            kl_coef = adaptive_kl_coef(kl_coef, seq_kl, p.kl_target, p.rollout_batch, p.kl_horizon)
        row = {"step": step, "score": round(mean_score, 4), "kl": round(seq_kl, 4), "kl_coef": round(kl_coef, 5),
               "mean_length": round(mean_len, 2), "eos_rate": round(eos_rate, 3),
               "policy_loss": round(sum(s[0] for s in stats) / len(stats), 5),
               "value_loss": round(sum(s[1] for s in stats) / len(stats), 5),
               "clipfrac": round(sum(s[2] for s in stats) / len(stats), 4),
               "advantage_abs": round(masked_mean(adv.abs(), mask).item(), 4)}
        history.append(row)
        if not main_process:
            continue
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(f"ppo/{k}", v, step)
        print(f"step {step}: score {row['score']:+.3f}  kl {row['kl']:.3f}  len {row['mean_length']:.1f}  "
              f"clip {row['clipfrac']:.3f}")
    train_s = time.time() - t0
    distributed = in_sync(sampler)
    if not main_process:
        return {"rank": rank, "distributed": distributed}
    writer.close()

    sampler, merge_diff = merge_lora(sampler, tok)  # a plain model under LoRA too
    save_checkpoint(sampler, tok, stage.model)
    effect = policy_vs_reference(sampler.eval(), reference, tok, eval_prompts, cfg.eval, cfg.seed)
    metrics = {"steps_completed": len(history), "guard": guard, "train_s": round(train_s, 1),
               "lora": cfg.lora.enabled, "lora_merge_max_abs_logit_diff": merge_diff,
               "samples_per_s": round(len(history) * p.rollout_batch * world / train_s, 2) if history else None,
               "history": history, "vs_sft": effect, "numerics": numerics.record(), "distributed": distributed}
    stage.finish(metrics)
    print_report("PPO", effect)
    return metrics


if __name__ == "__main__":
    cli(main, PPOStageConfig, {"model": "SFT checkpoint directory (policy and frozen reference)",
                               "reward_model": "reward model checkpoint (the reward stage's model/)",
                               "prompts": "training prompt rows", "heldout_prompts": "held-out prompt rows (evaluation)",
                               "out": "stage output directory"}, __doc__)
