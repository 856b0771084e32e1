import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import UserError, load_config
from core.world import WorldConfig
from labeling_ui.config import LabelConfig
from pretrain.train import PretrainConfig
from reward.train import RewardStageConfig
from rlhf.dpo import DPOStageConfig
from rlhf.evaluate import EvalConfig
from rlhf.ppo import PPOStageConfig
from rlhf.rloo import RLOOStageConfig
from sft.train import SFTStageConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"world": WorldConfig, "pretrain": PretrainConfig, "sft": SFTStageConfig, "label": LabelConfig,
           "reward": RewardStageConfig, "dpo": DPOStageConfig,
           "ppo": PPOStageConfig, "rloo": RLOOStageConfig, "eval": EvalConfig}  # stage name -> config class


STAGE_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_parses(path):
    cls = SHIPPED.get(path.stem)
    assert cls is not None, f"{path}: no config class registered for this stage in the test"
    load_config(cls, path)


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(PretrainConfig, None, ["train.max_steps=7", "train.lr=1e-3", "model.num_layers=2",
                                             "train.sample_prompts=[a, b]"])
    assert (cfg.train.max_steps, cfg.train.lr, cfg.model.num_layers) == (7, 1e-3, 2)
    assert cfg.train.sample_prompts == ["a", "b"]
    assert isinstance(load_config(PretrainConfig, None, ["train.lr=1"]).train.lr, float)


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("train:\n  max_step: 5\n")
    with pytest.raises(UserError, match=r"x\.yaml: train\.max_step: unknown key \(known keys here: batch_size"):
        load_config(PretrainConfig, p)


@pytest.mark.parametrize("text, match", [
    ("train:\n  max_steps: ten\n", r"train\.max_steps: must be int, got 'ten'"),
    ("train:\n  compile: 1\n", r"train\.compile: must be bool, got 1"),
    ("train:\n  max_steps: true\n", r"train\.max_steps: must be int, got True"),
    ("model: 3\n", r"model: expected a mapping"),
    ("- a\n- b\n", r"top level must be a mapping"),
    ("train: [\n", r"not valid YAML"),
])
def test_wrong_types_fail_clearly(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        load_config(PretrainConfig, p)


def test_seq_len_larger_than_context_fails():
    with pytest.raises(UserError, match=r"train\.seq_len=512 is larger than the model's context model\.max_seq_len=256"):
        load_config(PretrainConfig, None, ["train.seq_len=512", "model.max_seq_len=256"])


def test_missing_config_file_and_bad_override():
    with pytest.raises(UserError, match="nope.yaml: config file not found"):
        load_config(PretrainConfig, "nope.yaml")
    with pytest.raises(UserError, match="expected key=value"):
        load_config(PretrainConfig, None, ["train.max_steps"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load_in_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig
    cfg = ClusterConfig.from_yaml_file(path)  # unknown keys raise
    assert cfg.distributed_type.value in ("MULTI_GPU", "FSDP", "DEEPSPEED") and cfg.num_machines == 1


RANK_SCRIPT = """
import torch
from dataclasses import dataclass
from core.config import UserError, cli

@dataclass
class Cfg:
    mode: str = "ok"

def main(cfg, out):
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    model(torch.ones(1, 2)).sum().backward()
    print("trained", flush=False)  # buffered: must still reach the pipe
    if cfg.mode == "bad-input":
        raise UserError(f"{out}: not a stage directory; pass --out runs/x")
    if cfg.mode == "crash":
        raise RuntimeError("boom")

cli(main, Cfg, {"out": "output"})
"""


@pytest.mark.parametrize("mode, code", [("ok", 0), ("bad-input", 2), ("crash", 1)])
def test_a_rank_in_a_process_group_exits_with_the_stage_outcome(tmp_path, mode, code):
    """Ranks leave with os._exit (no interpreter shutdown under live gloo threads): the exit code, the
    one-line error, the traceback and buffered output must survive that."""
    script = tmp_path / "stage.py"
    script.write_text(RANK_SCRIPT)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("mode: ok\n")
    r = subprocess.run([sys.executable, str(script), "--config", str(cfg), "--out", "o", f"mode={mode}"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == code, r.stderr
    assert r.stdout == "trained\n"
    if mode == "bad-input":
        assert r.stderr.strip().splitlines() == ["error: o: not a stage directory; pass --out runs/x"]
    if mode == "crash":
        assert "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr


def test_a_stage_reruns_for_a_changed_setting_not_for_a_changed_comment(tmp_path):
    """make's stages depend on the config's parsed settings (core.config.settings_copy), not on the file's time."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "world.yaml").write_text((ROOT / "configs/micro/world.yaml").read_text())
    done = tmp_path / "runs/world/DONE"

    def make() -> int:
        r = subprocess.run(["make", "--no-print-directory", "SCALE=micro", f"CFG={cfg}", f"RUNS={tmp_path / 'runs'}",
                            str(done)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return done.stat().st_mtime_ns

    first = make()
    settings = tmp_path / "runs/.settings/world.json"
    assert settings.stat().st_mtime_ns == (cfg / "world.yaml").stat().st_mtime_ns  # a first copy reruns nothing
    os.utime(cfg / "world.yaml", ns=(first + 10**9, first + 10**9))               # edited after the stage ran ...
    with open(cfg / "world.yaml", "a") as f:
        f.write("# only a comment\n")
    assert make() == first                                                        # ... but only its comments
    (cfg / "world.yaml").write_text((cfg / "world.yaml").read_text().replace("seed: 0", "seed: 3"))
    os.utime(cfg / "world.yaml", ns=(first + 2 * 10**9, first + 2 * 10**9))
    assert make() > first                                                         # a setting: the stage reruns
    assert '"seed": 3' in settings.read_text()


def test_settings_copy_keeps_the_time_of_unchanged_settings(tmp_path):
    from core.config import settings_copy
    src, dst = tmp_path / "a.yaml", tmp_path / "s/a.json"
    src.write_text("b: 1\na: {x: [1, 2]}\n")
    assert settings_copy(src, dst) and dst.stat().st_mtime_ns == src.stat().st_mtime_ns
    before = dst.read_text()
    src.write_text("# a comment\na:\n  x: [1, 2]\nb: 1   # same settings, other layout\n")
    assert not settings_copy(src, dst) and dst.read_text() == before
    src.write_text("a: {x: [1, 3]}\nb: 1\n")
    assert settings_copy(src, dst) and '"x": [\n   1,\n   3\n  ]' in dst.read_text()
    src.write_text("a: [unclosed\n")                  # not YAML: copied as text, the stage names the error
    assert settings_copy(src, dst) and dst.read_text() == "a: [unclosed\n"
