import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from core.artifacts import StageDir, write_jsonl
from core.config import UserError
from core.data import load_rows, load_texts


@dataclass
class Knobs:
    lr: float = 0.1


def test_stage_dir_contract(tmp_path):
    stage = StageDir(tmp_path / "stage")
    stage.root.mkdir()
    stage.done.write_text("stale")
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [{"text": "a"}])
    stage.start(Knobs(), inputs={"corpus": inp})
    assert not stage.done.exists(), "a rerun must drop the stale DONE before doing any work"
    record = yaml.safe_load((stage.root / "config.yaml").read_text())
    assert record["config"] == {"lr": 0.1} and len(record["inputs"]["corpus"]["sha256"]) == 64
    stage.finish({"loss": 1.5})
    metrics = json.loads((stage.root / "metrics.json").read_text())
    assert metrics["loss"] == 1.5 and metrics["wall_time_s"] >= 0
    assert stage.done.stat().st_mtime_ns >= (stage.root / "metrics.json").stat().st_mtime_ns
    assert not list(stage.root.glob(".*")), "no temp files left behind"


def test_changed_code_discards_resume_state(tmp_path):
    code = tmp_path / "stage.py"
    code.write_text("STEPS = 1\n")
    stage = StageDir(tmp_path / "stage")
    stage.start(Knobs(), resume_state=("checkpoints",), stage_file=code)
    stage.checkpoints.mkdir()
    stage.start(Knobs(), resume_state=("checkpoints",), stage_file=code)
    assert stage.checkpoints.exists(), "same config, inputs and code: a crashed run resumes"
    code.write_text("STEPS = 2\n")
    stage.start(Knobs(), resume_state=("checkpoints",), stage_file=code)
    assert not stage.checkpoints.exists(), "new code must not continue checkpoints written by the old code"
    assert len(yaml.safe_load((stage.root / "config.yaml").read_text())["code_sha256"]) == 64


def test_load_rows_formats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": "y"}])
    pq.write_table(pa.Table.from_pylist([{"text": "p"}]), tmp_path / "a.parquet")
    (tmp_path / "a.txt").write_text("first para\nstill first\n\nsecond\n")
    assert [r["text"] for r in load_rows(tmp_path / "a.jsonl")] == ["x", "y"]
    assert load_rows(tmp_path / "a.parquet") == [{"text": "p"}]
    assert load_texts(tmp_path / "a.txt") == ["first para\nstill first", "second"]


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(UserError, match="missing.jsonl: file not found"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        load_rows(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="corpus is empty"):
        load_texts(tmp_path / "empty.jsonl")
    write_jsonl(tmp_path / "nofield.jsonl", [{"content": "x"}])
    with pytest.raises(UserError, match="row 1 has no string field 'text'"):
        load_texts(tmp_path / "nofield.jsonl")
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(UserError, match="unsupported file type '.csv'"):
        load_rows(tmp_path / "a.csv")


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"hf:nobody/no-such-corpus: could not load split 'train'"):
        load_rows("hf:nobody/no-such-corpus")
