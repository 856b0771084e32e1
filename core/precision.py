"""Which numerics a training stage runs in, picked at start: `train.precision` in every stage's config.

  fp32          torch's default: CPU matmuls go to MKL (AVX2 kernels on AMD, AVX-512 on Intel)
  fp32-onednn   fp32, with the linear layers' matmuls sent to oneDNN (core/onednn.py; AVX-512 on AMD too)
  bf16          autocast to bfloat16 with fp32 master weights and optimizer state (AMX or avx512_bf16 on
                CPU; the default on GPUs that support it)
  auto          on a GPU: bf16 where supported, else fp32. On a CPU: a probe measures each path that the
                CPU can run (a 2-layer copy of the model's shape, fresh weights, a few AdamW steps on one
                fixed batch of random ids) and takes the fastest whose probe losses match fp32's to
                LOSS_TOLERANCE; a path must beat the simpler ones by MARGIN, so a tie stays fp32.

Under bf16 on a CPU attention gets its own pick: autocast hands scaled_dot_product_attention bf16 inputs,
and CPU flash attention in bf16 can be slower than in fp32 while the matmuls around it gain (the AMD EPYC of
docs/benchmarks.md: 45 against 30 ms a layer at the tiny shape). Three ways race in the bf16 probe step,
on a batch padded as the chat stages' are: SDPA in bf16; SDPA in fp32 ("sdpa_fp32": transformers' SDPA
with autocast off, more precise, not less); transformers' "eager" attention (bf16 matmuls around an fp32
softmax, no fused kernel). On that EPYC eager wins (probe step 22 against 24 and 27 ms): at short contexts
and small heads the flash kernels' tiling does not pay, least of all with a padding mask. A bf16 kind must beat
fp32 by ATTENTION_MARGIN. A compiled step (pretraining) takes eager attention without a race: inductor fuses
its mask, softmax and matmuls, where SDPA stays one opaque kernel, and racing compiled steps would cost a
compilation per kind (8-17 s). On that EPYC the compiled step at the tiny shape ran 1.0-1.18x as fast with eager
than with fp32 SDPA, while the uncompiled race there was a tie (23.6 against 24.0 ms) that fell either way
from machine to machine of the kind, and with it the base model's weights (docs/benchmarks.md).

Which is fastest depends on the CPU, not the project: on this project's AMD EPYC (avx512_bf16, no AMX)
oneDNN is ~2x MKL and bf16 ~1.5x oneDNN; on an Intel Xeon with AMX, MKL is already AVX-512 and bf16
runs at ~4x fp32; on an Intel Xeon with avx512_bf16 but no AMX, MKL wins and bf16 trains at 0.67x.
The probe takes about a second; its figures are cached per machine (CPU model, torch version, threads,
model shape) in $PIPELINE_CACHE_DIR (default ~/.cache/alignment-pipeline), so the
next stage on the same shape only reads them. Under several processes every rank uses the rates
averaged over ranks, so they all pick the same path.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from core.config import UserError

PRECISIONS = ("auto", "fp32", "fp32-onednn", "bf16")
PATHS = ("fp32", "fp32-onednn", "bf16")   # simplest first: a later path must beat the best earlier one
MARGIN = 1.05                             # ... by 5 %, more than the probe's run-to-run noise
ATTENTION_MARGIN = 1.02                   # attention kinds race in one path: their steps differ by <1 % run to run
LOSS_TOLERANCE = 0.01                     # max relative difference from fp32's loss over the probe steps
ATTENTION = ("fp32", "bf16", "eager")     # SDPA in fp32 / in bf16, transformers' eager (bf16 matmuls)
PROBE_LAYERS, PROBE_ROWS, PROBE_SEQ, PROBE_STEPS, PROBE_WARMUP = 2, 4, 128, 3, 1


def check(value: str, where: str) -> None:
    if value not in PRECISIONS:
        raise UserError(f"{where} must be one of {', '.join(PRECISIONS)}, got {value!r}")


@dataclass
class Numerics:
    precision: str                     # what runs: fp32 | fp32-onednn | bf16
    requested: str                     # the config's train.precision
    source: str                        # forced | gpu | measured | cached
    cpu: str = ""
    tokens_per_s: dict[str, float] = field(default_factory=dict)  # probe rate per path tried
    loss_gap: dict[str, float] = field(default_factory=dict)      # max relative loss difference from fp32
    eligible: list[str] = field(default_factory=list)
    attention: str = ""                # under bf16 on a CPU: how attention runs (ATTENTION)
    attention_ms: dict[str, float] = field(default_factory=dict)  # its race: ms per probe step, per kind
    compiled: bool = False             # a compiled step: eager attention under bf16, whatever the race says
    probe_s: float = 0.0

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def onednn(self) -> bool:
        return self.precision == "fp32-onednn"

    def line(self) -> str:
        """The stage's first log line about numerics."""
        head = f"numerics: {self.precision}" + (f", attention {self.attention}" if self.attention else "")
        head += ", compiled" if self.attention and self.compiled else ""
        head += f" ({self.source}"
        if self.tokens_per_s:
            rates = ", ".join(f"{p} {r:,.0f}" for p, r in self.tokens_per_s.items())
            head += f"; probe tokens/s on {self.cpu}: {rates}"
        if self.attention_ms:
            head += "; attention ms " + ", ".join(f"{p} {ms:.1f}" for p, ms in self.attention_ms.items())
        return head + ")"

    def record(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The instruction-set flags the first CPU reports (empty where /proc/cpuinfo is not there)."""
    try:
        return set(next(x for x in open("/proc/cpuinfo") if x.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls: AMX (Intel Sapphire Rapids on) or AVX512-BF16 (AMD Zen 4 on, Intel Cooper Lake)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def candidates() -> list[str]:
    out = ["fp32"]
    if torch.backends.mkldnn.is_available():
        out.append("fp32-onednn")
    if cpu_has_bf16():
        out.append("bf16")
    return out


def autocast(numerics: Numerics | None, device_type: str = "cpu"):
    """The context a forward pass runs in for these numerics (a no-op unless bf16)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bool(numerics and numerics.bf16))


# ---------------------------------------------------------------- the probe

def _probe_model(config):
    from transformers import AutoModelForCausalLM
    config = copy.deepcopy(config)
    config.num_hidden_layers = min(config.num_hidden_layers, PROBE_LAYERS)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention in fp32 inside a bf16 autocast region (registered as "sdpa_fp32")."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


def use_attention(kind: str, *models) -> None:
    """Route the models' attention the probe's way (ATTENTION): "fp32" through "sdpa_fp32", "eager" through
    transformers' eager attention, "bf16" stays SDPA. Not saved: checkpoints still load as plain sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if kind == "bf16":
        return
    name = {"fp32": "sdpa_fp32", "eager": "eager"}[kind]
    if name == "sdpa_fp32":
        AttentionInterface.register("sdpa_fp32", _sdpa_fp32)
        AttentionMaskInterface.register("sdpa_fp32", sdpa_mask)  # without it transformers builds no mask at all
    for m in models:  # a wrapper (PPO's value model) holds a transformers model: its outermost one switches
        next(x for x in m.modules() if hasattr(x, "set_attn_implementation")).set_attn_implementation(name)


def attention_probe(config) -> dict[str, float]:
    """Milliseconds per step of the bf16 probe model (`probe`) with each ATTENTION kind. Measured in a
    whole step, not as a lone kernel: alone at this shape transformers' eager attention lost to fp32 SDPA
    (3.1-3.9 against 2.4-2.6 ms), in the model's step it won."""
    raced = _race({kind: ("bf16", kind) for kind in ATTENTION}, config, padded=True)
    return {kind: 1000 * PROBE_ROWS * _probe_seq(config) / rate for kind, (rate, _) in raced.items()}


def decide_attention(ms: dict[str, float]) -> str:
    """The fastest ATTENTION kind; a bf16 one (SDPA or eager) only when it beats fp32 by ATTENTION_MARGIN."""
    best = min((k for k in ("bf16", "eager") if k in ms), key=ms.__getitem__)
    return best if ms["fp32"] > ms[best] * ATTENTION_MARGIN else "fp32"


def probe(paths: list[str], config, attention: str = "bf16") -> dict[str, tuple[float, list[float]]]:
    """Per path: (tokens/s, loss per step) of a few AdamW steps on one fixed batch, run as that path would
    run (bf16 with this attention)."""
    return _race({path: (path, attention) for path in paths}, config)


def _probe_seq(config) -> int:
    return min(PROBE_SEQ, getattr(config, "max_position_embeddings", PROBE_SEQ + 1) - 1)


def _race(setups: dict[str, tuple[str, str]], config, padded: bool = False) -> dict[str, tuple[float, list[float]]]:
    """Per setup name, (path, attention kind) -> (tokens/s, loss per step) of the probe model. The setups
    take turns step by step and each keeps its fastest step, so a busy neighbour on a shared machine slows
    them alike instead of deciding the race. The probe models are seeded inside a fork of torch's random
    state: a stage that seeds torch and then picks its numerics (PPO) draws the same numbers after a probe as
    after a cache hit."""
    with torch.random.fork_rng(devices=[]):
        return _race_steps(setups, config, padded)


def _race_steps(setups: dict[str, tuple[str, str]], config, padded: bool) -> dict[str, tuple[float, list[float]]]:
    from core.onednn import use_onednn_linear
    seq = _probe_seq(config)
    ids = torch.randint(0, config.vocab_size, (PROBE_ROWS, seq + 1), generator=torch.Generator().manual_seed(0))
    mask = None
    if padded:  # as the chat stages' batches are: every other row left-padded by a quarter
        mask = torch.ones(PROBE_ROWS, seq, dtype=torch.long)
        mask[::2, : seq // 4] = 0
    runs = {}
    for name, (path, attention) in setups.items():
        model = _probe_model(config).train()
        if path == "fp32-onednn":
            use_onednn_linear(model)
        if path == "bf16":
            use_attention(attention, model)
        runs[name] = (path, model, torch.optim.AdamW(model.parameters(), lr=1e-3), [], [])
    for i in range(PROBE_WARMUP + PROBE_STEPS):
        for path, model, opt, losses, times in runs.values():
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path == "bf16"):
                logits = model(input_ids=ids[:, :-1], attention_mask=mask).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if i >= PROBE_WARMUP:
                times.append(time.perf_counter() - t)
    return {name: (PROBE_ROWS * seq / min(times), losses) for name, (_, _, _, losses, times) in runs.items()}


def decide(rates: dict[str, float], gaps: dict[str, float]) -> tuple[str, list[str]]:
    """The fastest path whose losses match fp32's; each later path must beat the best so far by MARGIN."""
    eligible = [p for p in PATHS if p in rates and gaps.get(p, 0.0) <= LOSS_TOLERANCE]
    best = "fp32"
    for p in eligible:
        if rates[p] > rates[best] * MARGIN:
            best = p
    return best, eligible


def cache_path() -> Path:
    return Path(os.environ.get("PIPELINE_CACHE_DIR") or Path.home() / ".cache" / "alignment-pipeline") / "numerics.json"


def _cache_key(config, threads: int) -> str:
    c = config
    return (f"{cpu_name()} | torch {torch.__version__} | {threads} threads | {c.model_type} d{c.hidden_size} "
            f"ff{getattr(c, 'intermediate_size', 0)} h{c.num_attention_heads}/{getattr(c, 'num_key_value_heads', 0)} "
            f"v{c.vocab_size} | {','.join(candidates())}")


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = {**_read_cache(), key: entry}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only home only costs the next stage its own probe
        print(f"note: could not cache the numerics probe in {path}: {e}")


def choose(requested: str, config, collective: bool = True, compiled: bool = False) -> Numerics:
    """Resolve train.precision for a model with this transformers `config`: a collective under a launcher, so that
    every rank takes the same decision; `collective=False` decides from this process alone (one that answers
    prompts while the other ranks have finished). `compiled`: the stage's step is torch.compile'd, so bf16 on a
    CPU runs eager attention (module docstring); the race is still run and cached for the stages after it."""
    from core.distributed import ensure_initialized, is_main, mean_over_ranks
    check(requested, "train.precision")
    if requested in ("fp32", "fp32-onednn"):
        return Numerics(requested, requested, "forced")
    if torch.cuda.is_available():
        if requested == "bf16":
            return Numerics("bf16", requested, "forced")
        return Numerics("bf16" if torch.cuda.is_bf16_supported() else "fp32", requested, "gpu")
    if collective:
        ensure_initialized()
    average = mean_over_ranks if collective else (lambda *xs: list(xs))
    paths, key = candidates(), _cache_key(config, torch.get_num_threads())
    # What this choice needs measured: the attention dtype wherever bf16 may run, the paths' rates for auto.
    needed = ((["attention_ms"] if requested == "bf16" or "bf16" in paths else [])
              + (["tokens_per_s"] if requested == "auto" else []))
    entry = _read_cache().get(key, {})
    complete = all(k in entry for k in needed) and set(entry.get("attention_ms", ATTENTION)) == set(ATTENTION)
    hit = average(1.0 if complete else 0.0)[0] == 1.0
    t0 = time.perf_counter()
    if not hit:
        entry = dict(entry)
        if "attention_ms" in needed:
            measured_ms = attention_probe(config)
            ms = average(*(measured_ms[k] for k in ATTENTION))
            entry["attention_ms"] = {k: round(x, 2) for k, x in zip(ATTENTION, ms)}
        if "tokens_per_s" in needed:
            measured = probe(paths, config, decide_attention(entry["attention_ms"]) if "bf16" in paths else "bf16")
            means = average(*(measured[p][0] for p in paths))
            fp32_losses = measured["fp32"][1]
            entry["tokens_per_s"] = {p: round(r, 1) for p, r in zip(paths, means)}
            entry["loss_gap"] = {p: round(max(abs(a - b) / b for a, b in zip(measured[p][1], fp32_losses)), 6)
                                 for p in paths}
        entry["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if is_main():
            _write_cache(key, entry)
    if requested == "auto":
        precision, eligible = decide(entry["tokens_per_s"], entry["loss_gap"])
        numerics = Numerics(precision, requested, "cached" if hit else "measured", cpu_name(), entry["tokens_per_s"],
                            entry["loss_gap"], eligible)
    else:
        numerics = Numerics("bf16", requested, "forced", cpu_name())
    if numerics.bf16:
        numerics.attention = "eager" if compiled else decide_attention(entry["attention_ms"])
        numerics.attention_ms, numerics.compiled = entry["attention_ms"], compiled
    numerics.probe_s = round(time.perf_counter() - t0, 3)
    return numerics


def apply(requested: str, *models, compiled: bool = False) -> Numerics:
    """Resolve train.precision for the stage's models (their shape is the first one's), switch their linear
    layers to oneDNN or their attention (use_attention) when that is the pick, and print the choice. bf16 is
    the caller's: autocast in its own loop, or TRL's bf16 flag. `compiled`: see `choose`."""
    from core.distributed import is_main
    from core.onednn import use_onednn_linear
    numerics = choose(requested, models[0].config, compiled=compiled)
    if numerics.onednn:
        use_onednn_linear(*models)
    if numerics.attention:
        use_attention(numerics.attention, *models)
    if is_main():
        print(numerics.line())
    return numerics


def inference_kernel(model) -> str:
    """The fp32 kernel a CPU runs inference in: the probe's pick for this shape (cached after training,
    else a ~1 s probe) with bf16 left out, since bf16 changes greedy answers. fp32 and fp32-onednn
    differ by float rounding only (`make bench` prints the answers both give)."""
    n = choose("auto", model.config, collective=False)  # on a GPU there are no rates, and the answer is fp32
    return decide({p: r for p, r in n.tokens_per_s.items() if p != "bf16"}, n.loss_gap)[0]
