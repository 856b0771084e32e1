"""Pretrain: a byte-level BPE tokenizer and a Llama-style base model, trained from scratch on a corpus.

Run:    make pretrain
        python -m pretrain.train --config configs/tiny/pretrain.yaml --corpus runs/tiny/world/corpus.jsonl \
            --heldout runs/tiny/world/corpus_heldout.jsonl --probe-prompts runs/tiny/world/prompts_heldout.jsonl \
            --out runs/tiny/pretrain [train.max_steps=50 ...]
Reads:  corpus and held-out corpus ({"text": ...} jsonl / parquet / txt, or hf:<dataset>); optionally
        held-out task prompts, asked in the corpus's format at the end (the "task probe")
Writes: <out>/model (HF checkpoint + tokenizer with chat template), <out>/tokenizer, <out>/checkpoints
        (resume state), config.yaml, metrics.json, logs/ (tensorboard), DONE (last)

Documents are wrapped as <bos> text <eos> and packed back to back into blocks of seq_len + 1 tokens
(no padding; attention runs across document boundaries, as in GPT-style pretraining). The data order
is a function of (seed, step), so a resumed run sees exactly the batches the crashed run would have.
Rerunning after a crash resumes from the newest checkpoint in <out>/checkpoints.

Many devices: `make pretrain NPROC=8` (accelerate launch, configs/accelerate/). train.batch_size is per
process; step s takes rows of the same seeded order, each process its own slice of the global batch, so
one process with batch 32 and two with batch 16 see the same data. Resume-state checkpoints are written
for one process and DDP; under FSDP / ZeRO only the final model is (a crash restarts from step 0).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.annotator import first_per_task, score_answers
from core.artifacts import StageDir
from core.config import UserError, cli
from core.data import load_rows, load_texts
from core.distributed import accelerator_for, in_sync, is_main, per_process_threads
from core.generation import Decoding, complete
from core.model import ModelConfig, build_model, count_params, save_checkpoint
from core.onednn import OneDNNLinear
from core.precision import apply as apply_precision, check as check_precision
from core.tokenizer import adopt_hub_model, check_chat_contract, load_tokenizer, train_tokenizer
from core.world import corpus_prompt


@dataclass
class TokenizerConfig:
    vocab_size: int = 2048
    min_frequency: int = 2
    train_chars: int = 4_000_000       # the BPE is trained on the first this-many corpus characters


@dataclass
class TrainConfig:
    batch_size: int = 16
    seq_len: int = 256
    max_steps: int = 600
    lr: float = 3e-3
    min_lr_ratio: float = 0.1          # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.1          # on matrices only, not on norms
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 100
    keep_checkpoints: int = 2
    compile: bool = True               # torch.compile the forward + loss (CPU inductor: ~1.1x)
    # The same run gives the same weights: compiled CPU kernels otherwise add up the embedding's gradient
    # with atomics across threads, in whatever order they finish (torch.use_deterministic_algorithms; ~1.5 %).
    deterministic: bool = True
    fused_adamw: bool = True
    precision: str = "auto"            # auto | fp32 | fp32-onednn | bf16: picked at start, core/precision.py
    threads: int = 0                   # 0 = all cores
    sample_prompts: list[str] = field(default_factory=lambda: [
        "One day", "Question: What is 3 plus 4?\nAnswer:", "Mia went to the park. Mia saw a dog.\nQuestion: Where did Mia go?\nAnswer:"])
    sample_tokens: int = 40
    probe_per_task: int = 20           # held-out prompts per task asked in the corpus format at the end


@dataclass
class PretrainConfig:
    seed: int = 0
    # A hub base model (e.g. Qwen/Qwen2.5-0.5B) or a local checkpoint to start from instead of pretraining:
    # the stage then only adopts it (project chat template and special tokens) and writes it as model/.
    init_from: str = ""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.train.seq_len > self.model.max_seq_len:
            raise UserError(f"train.seq_len={self.train.seq_len} is larger than the model's context "
                            f"model.max_seq_len={self.model.max_seq_len}; lower one or raise the other")
        for name in ("batch_size", "seq_len", "max_steps", "eval_every", "save_every", "log_every"):
            if getattr(self.train, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self.train, name)}")
        check_precision(self.train.precision, "train.precision")


# ---------------------------------------------------------------- data

def pack(tokenizer, texts: list[str], block: int, desc: str) -> torch.Tensor:
    """Tokenize documents as <bos> text <eos>, concatenate, and cut into rows of `block` tokens."""
    ids: list[int] = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for i in tqdm(range(0, len(texts), 2048), desc=desc, unit="chunk", leave=False):
        for doc in tokenizer(texts[i:i + 2048], add_special_tokens=False)["input_ids"]:
            ids.append(bos)
            ids.extend(doc)
            ids.append(eos)
    n = len(ids) // block
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)


def batch_rows(step: int, batch_size: int, n_rows: int, seed: int) -> torch.Tensor:
    """Row indices for `step`: epochs are seeded permutations, so the order is a pure function of step."""
    start = step * batch_size
    rows = []
    while len(rows) < batch_size:
        epoch, offset = divmod(start + len(rows), n_rows)
        perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        rows.extend(perm[offset: offset + batch_size - len(rows)].tolist())
    return torch.tensor(rows)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cfg.fused_adamw or None)


def lm_loss(model, block: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on a packed block: predict block[:, 1:] from block[:, :-1]."""
    logits = model(input_ids=block[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), block[:, 1:].flatten())


def train_step(model, opt, loss_fn, batch: torch.Tensor, grad_clip: float, accelerator=None) -> tuple[float, float]:
    """One optimizer step; returns (loss, grad norm before clipping). With an `accelerate.Accelerator` the
    backward pass and the clipping go through it (gradient sync under DDP, sharded norms under FSDP)."""
    loss = loss_fn(model, batch)
    if accelerator is None:
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), float(grad_norm)


@torch.no_grad()
def heldout_loss(model, rows: torch.Tensor, cfg: TrainConfig) -> float:
    model.eval()
    n = min(len(rows), cfg.eval_batches * cfg.batch_size)
    losses = [lm_loss(model, rows[i:i + cfg.batch_size]).item() for i in range(0, n, cfg.batch_size)]
    model.train()
    return sum(losses) / len(losses)


def samples(model, tokenizer, cfg: TrainConfig, seed: int) -> list[dict]:
    out = []
    for dec in (Decoding(max_new_tokens=cfg.sample_tokens), Decoding(0.8, max_new_tokens=cfg.sample_tokens)):
        texts = [c.text for c in complete(model, tokenizer, cfg.sample_prompts, dec, seed=seed)]
        out += [{"prompt": p, "decoding": str(dec), "completion": t} for p, t in zip(cfg.sample_prompts, texts)]
    return out


def task_probe(model, tokenizer, prompts_path: str, per_task: int) -> dict:
    """Can the base model already do the world's tasks when asked in the corpus's own format (greedy)?

    This is the skill SFT builds on: a base model that cannot look a name up in a story will not
    learn to after a minute of SFT.
    """
    picked = first_per_task(load_rows(prompts_path), per_task)
    answers = [""] * len(picked)
    for long in (False, True):  # stories need more tokens than one-line answers
        idx = [i for i, r in enumerate(picked) if (r["task"] == "story_write") == long]
        dec = Decoding(max_new_tokens=60 if long else 24)
        for i, c in zip(idx, complete(model, tokenizer, [corpus_prompt(picked[i]) for i in idx], dec)):
            answers[i] = c.text.split("\n")[0].strip()
    result = score_answers(picked, answers)
    result["examples"] = [{"prompt": corpus_prompt(r), "answer": a} for r, a in zip(picked, answers)][::per_task]
    return result


# ---------------------------------------------------------------- checkpoints (resume state)

def save_state(stage: StageDir, model, opt, step: int, keep: int) -> None:
    stage.checkpoints.mkdir(parents=True, exist_ok=True)
    path = stage.checkpoints / f"step_{step:06d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)
    for old in sorted(stage.checkpoints.glob("step_*.pt"))[:-keep]:
        old.unlink()


def latest_state(stage: StageDir) -> dict | None:
    found = sorted(stage.checkpoints.glob("step_*.pt")) if stage.checkpoints.is_dir() else []
    return torch.load(found[-1], weights_only=True) if found else None


def adopt(cfg: PretrainConfig, stage: StageDir) -> dict:
    """Skip pretraining: the base model is cfg.init_from, made to keep the chat contract."""
    stage.start(cfg, stage_file=__file__)
    model, tokenizer = adopt_hub_model(cfg.init_from, torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32)
    metrics = {"init_from": cfg.init_from, "params": count_params(model), "vocab_size": len(tokenizer),
               "samples": samples(model, tokenizer, cfg.train, cfg.seed)}
    if is_main():
        save_checkpoint(model, tokenizer, stage.model)
    stage.finish(metrics)
    return metrics


# ---------------------------------------------------------------- main

def main(cfg: PretrainConfig, corpus: str, heldout: str, out: str, probe_prompts: str | None = None) -> dict:
    from accelerate import PartialState
    from accelerate.utils import DistributedType
    from torch.utils.tensorboard import SummaryWriter

    tc = cfg.train
    stage = StageDir(out)
    if cfg.init_from:
        return adopt(cfg, stage)
    texts, heldout_texts = load_texts(corpus), load_texts(heldout)
    stage.start(cfg, inputs={"corpus": corpus, "heldout": heldout}, resume_state=("checkpoints", "tokenizer"),
                stage_file=__file__)
    # The Accelerator comes once the numerics are picked (they need the model's shape); until then the
    # process group alone says who is who.
    state = PartialState(cpu=not torch.cuda.is_available())
    main_process, world, rank = state.is_main_process, state.num_processes, state.process_index
    torch.set_num_threads(tc.threads or per_process_threads())
    # warn_only: on a GPU some kernels have no deterministic twin; torch names them and runs them as they are.
    torch.use_deterministic_algorithms(tc.deterministic, warn_only=True)

    tok_dir = stage.root / "tokenizer"
    if not main_process:
        state.wait_for_everyone()  # the main process trains (or keeps) the tokenizer
        tokenizer = load_tokenizer(tok_dir)
    elif tok_dir.is_dir():
        tokenizer = load_tokenizer(tok_dir)  # resume: same vocabulary as the checkpoints
    else:
        budget, chunk = cfg.tokenizer.train_chars, []
        for t in texts:
            chunk.append(t)
            budget -= len(t)
            if budget <= 0:
                break
        tokenizer = train_tokenizer(chunk, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, cfg.model.max_seq_len)
        check_chat_contract(tokenizer)
        tokenizer.save_pretrained(tok_dir)
    if main_process and world > 1:
        state.wait_for_everyone()

    train_rows = pack(tokenizer, texts, tc.seq_len + 1, "tokenize corpus")
    eval_rows = pack(tokenizer, heldout_texts, tc.seq_len + 1, "tokenize held-out")
    if len(train_rows) < tc.batch_size or len(eval_rows) == 0:
        raise UserError(f"{corpus}: too little text for one batch of {tc.batch_size} x {tc.seq_len + 1} tokens "
                        f"(corpus has {len(train_rows)} blocks, held-out {len(eval_rows)}); add text or lower train.seq_len")

    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    # before the optimizer: oneDNN layers keep their parameters
    numerics = apply_precision(tc.precision, model, compiled=tc.compile)
    accelerator = accelerator_for(numerics.bf16)
    full_state = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                  DistributedType.MULTI_GPU)  # every rank holds all weights
    opt = make_optimizer(model, tc)
    start_step = 0
    state = latest_state(stage) if full_state else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_step = state["step"]
        print(f"resuming from {stage.checkpoints}/step_{start_step:06d}.pt")
    model.train()
    onednn_layers = sum(isinstance(m, OneDNNLinear) for m in model.modules())
    model, opt = accelerator.prepare(model, opt)
    loss_fn = torch.compile(lm_loss) if tc.compile else lm_loss

    writer = SummaryWriter(str(stage.logs), purge_step=start_step) if main_process else None
    history, train_losses = [], []
    tokens_per_step = tc.batch_size * tc.seq_len * world
    timed_steps, timed_s = 0, 0.0
    bar = tqdm(range(start_step, tc.max_steps), desc="pretrain", initial=start_step, total=tc.max_steps,
               disable=not main_process)
    for step in bar:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        rows = batch_rows(step, tc.batch_size * world, len(train_rows), cfg.seed)
        batch = train_rows[rows[rank * tc.batch_size:(rank + 1) * tc.batch_size]].to(accelerator.device)
        loss_value, grad_norm = train_step(model, opt, loss_fn, batch, tc.grad_clip, accelerator)
        dt = time.perf_counter() - t0
        if step - start_step >= 3:  # the first steps include compilation
            timed_steps, timed_s = timed_steps + 1, timed_s + dt
        train_losses.append((step, loss_value))
        if main_process and (step % tc.log_every == 0 or step == tc.max_steps - 1):
            writer.add_scalar("train/loss", loss_value, step)
            writer.add_scalar("train/lr", lr_at(step, tc), step)
            writer.add_scalar("train/grad_norm", grad_norm, step)
            writer.add_scalar("train/tokens_per_s", tokens_per_step / dt, step)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}")
        done = step + 1
        if done % tc.eval_every == 0 or done == tc.max_steps:  # every rank: the wrapped model's forward syncs
            hl = heldout_loss(model, eval_rows.to(accelerator.device), tc)
            history.append({"step": done, "heldout_loss": round(hl, 4), "heldout_ppl": round(math.exp(hl), 3)})
            if writer:
                writer.add_scalar("heldout/loss", hl, done)
                writer.add_scalar("heldout/perplexity", math.exp(hl), done)
        if done % tc.save_every == 0 and done < tc.max_steps and full_state and main_process:
            save_state(stage, accelerator.unwrap_model(model), opt, done, tc.keep_checkpoints)

    distributed = in_sync(accelerator.unwrap_model(model)) if full_state else {"world_size": world, "sharded": True}
    weights = accelerator.get_state_dict(model)  # whole weights on the main process, also when sharded
    if not main_process:
        return {"rank": rank, "distributed": distributed}
    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    model.load_state_dict(weights)
    final_samples = samples(model, tokenizer, tc, cfg.seed)
    probe = task_probe(model, tokenizer, probe_prompts, tc.probe_per_task) if probe_prompts else None
    for i, s in enumerate(final_samples):
        writer.add_text(f"samples/{i}", f"**{s['decoding']}** `{s['prompt']}` → {s['completion']}", tc.max_steps)
    writer.close()
    save_checkpoint(model, tokenizer, stage.model)

    recent = [loss for _, loss in train_losses[-20:]]
    metrics = {
        "params": count_params(model),
        "vocab_size": len(tokenizer),
        "model_vocab_size": model.config.vocab_size,
        "corpus_tokens": int(train_rows.numel()),
        "heldout_tokens": int(eval_rows.numel()),
        "steps": tc.max_steps,
        "resumed_from_step": start_step,
        "tokens_seen": tc.max_steps * tokens_per_step,
        "epochs": round(tc.max_steps * tc.batch_size / len(train_rows), 3),
        "first_loss": round(train_losses[0][1], 4) if train_losses else None,
        "final_train_loss": round(sum(recent) / len(recent), 4) if recent else None,
        "heldout": history,
        "final_heldout_loss": history[-1]["heldout_loss"] if history else None,
        "final_heldout_ppl": history[-1]["heldout_ppl"] if history else None,
        "numerics": numerics.record(),
        "onednn_linear_layers": onednn_layers,
        "train_tokens_per_s": round(timed_steps * tokens_per_step / timed_s) if timed_s else None,
        "allocator": "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "stock",
        "samples": final_samples,
        "task_probe": probe,
        "distributed": distributed,
    }
    stage.finish(metrics)
    return metrics


if __name__ == "__main__":
    cli(main, PretrainConfig, {"corpus": "training corpus", "heldout": "held-out corpus (perplexity)",
                               "out": "stage output directory",
                               "probe_prompts": "held-out task prompts for the base-model task probe (optional)"},
        __doc__, optional=("probe_prompts",))
