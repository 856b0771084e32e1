"""make gpu-check's verdict: a stage that did not finish, ran another engine than asked, or (DDP) ended out of sync fails."""

import json

from tools import gpu_check


def write(root, config, stage, **dist):
    d = root / config / stage
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"distributed": dist}))
    (d / "DONE").write_text("")


def test_verdicts_per_engine_and_stage(tmp_path, capsys):
    for engine, ran in gpu_check.ENGINES.items():
        for stage in gpu_check.stages(engine):
            write(tmp_path, engine, stage, engine_requested=ran, engine=ran, world_size=2, sharded=engine != "ddp",
                  in_sync=True)
    assert gpu_check.main([str(tmp_path)]) == 0 and "18 of 18 stage runs ok" in capsys.readouterr().out

    (tmp_path / "zero3/dpo/DONE").unlink()
    (tmp_path / "fsdp/dpo/metrics.json").write_text(json.dumps({"distributed": {"engine_requested": "FSDP",
                                                                                "engine": "MULTI_GPU"}}))
    (tmp_path / "ddp/sft/metrics.json").write_text(json.dumps({"distributed": {"engine": "MULTI_GPU", "in_sync": False}}))
    rows = {(r["engine"], r["stage"]): r["why"] for r in gpu_check.check(tmp_path) if not r["ok"]}
    assert rows == {("zero3", "dpo"): "did not finish", ("fsdp", "dpo"): "ran as MULTI_GPU",
                    ("ddp", "sft"): "ranks out of sync"}
    assert gpu_check.main([str(tmp_path)]) == 1
