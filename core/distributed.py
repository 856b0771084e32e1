"""Many processes, one stage: what the training stages need to run under `accelerate launch` or `torchrun`.

The launcher starts one process per device and sets RANK / WORLD_SIZE; TRL's trainers (SFT, reward, DPO,
RLOO) pick that up themselves, and the project's own loops (pretrain, PPO) go through `accelerate.Accelerator`,
so the shipped configs (configs/accelerate/: DDP, FSDP, DeepSpeed ZeRO-2/3) apply to every stage. Only the
main process writes artifacts and runs the evaluations; every process trains.

`in_sync(model)` is the check that DDP did its job: a digest of every parameter's bytes, gathered from all
ranks. Stages record it in metrics.json ("distributed"), and the 2-process test asserts the digests match.
torch is imported where it is used: a one-process stage that trains nothing (world, export, the scripted
annotators) starts a second sooner without it.
"""

from __future__ import annotations

import hashlib
import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def per_process_threads() -> int:
    """CPU threads for one process: the machine's cores shared by the processes on it."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))


def barrier() -> None:
    if world_size() == 1:  # no group to wait for
        return
    import torch
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def ensure_initialized() -> None:
    """Join the process group the launcher describes (gloo on CPU, nccl on GPUs); a no-op in one process."""
    if world_size() == 1:
        return
    import torch
    if not torch.distributed.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")


def param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def in_sync(model: torch.nn.Module) -> dict:
    """Every rank's parameter digest (a collective: call it on all ranks). One process: world_size 1."""
    import torch
    digest = param_digest(model)
    digests = [digest]
    if world_size() > 1 and torch.distributed.is_initialized():
        digests = [None] * world_size()
        torch.distributed.all_gather_object(digests, digest)
    asked, ran = engines()
    if asked != ran and is_main():
        print(f"note: the accelerate config asked for {asked} but the stage ran as {ran} (accelerate runs FSDP and "
              "DeepSpeed configs as plain DDP without GPUs; `make gpu-check` runs them for real)")
    return {"world_size": len(digests), "backend": torch.distributed.get_backend() if len(digests) > 1 else None,
            "engine_requested": asked, "engine": ran,
            "sharded": any(type(p).__name__ == "DTensor" for p in model.parameters()),
            "param_digests": digests, "in_sync": len(set(digests)) == 1}


def accelerator_for(bf16: bool):
    """The `accelerate.Accelerator` of the project's own loops (pretrain, PPO), in the numerics the stage picked.
    accelerate keeps one state per process and refuses a second Accelerator in other numerics, so a stage run
    after another in one process (the tests, a notebook; the auto pick differs by model shape) would fail:
    like transformers' TrainingArguments, drop the previous stage's state first (the process group stays)."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")


def engines() -> tuple[str, str]:
    """(what the launcher's config asked for, what accelerate ran): NO (one process), MULTI_CPU / MULTI_GPU
    (DDP), FSDP or DEEPSPEED. On CPU accelerate turns FSDP and DeepSpeed into MULTI_CPU, silently."""
    from accelerate.state import AcceleratorState, PartialState
    asked = ("FSDP" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else
             "DEEPSPEED" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None)
    ran = (AcceleratorState() if AcceleratorState._shared_state else PartialState()).distributed_type.value
    return asked or ran, ran


def mean_over_ranks(*values: float) -> list[float]:
    """Average scalars over all ranks (a collective), so every rank takes the same decision."""
    import torch
    t = torch.tensor(values, dtype=torch.float64)
    if world_size() > 1 and torch.distributed.is_initialized():
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        t = t / world_size()
    return t.cpu().tolist()
