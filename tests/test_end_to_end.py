"""The Makefile chain end to end on the micro scale: what `make all` does on a fresh checkout."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_all_micro(tmp_path):
    runs = tmp_path / "runs"
    db = tmp_path / "labels.db"
    make = ["make", "all", "SCALE=micro", f"RUNS={runs}", f"DB={db}"]
    r = subprocess.run(make, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("world", "pretrain", "sft", "seed", "label-auto", "prefs", "reward", "dpo", "ppo", "arena-seed",
                  "arena-auto", "eval"):
        assert (runs / stage / "DONE").exists(), stage
    metrics = json.loads((runs / "pretrain" / "metrics.json").read_text())
    assert metrics["steps"] == 10 and metrics["task_probe"]["n"] == 8
    # tcmalloc (installed by make install) is found when the stage runs, so a first run gets it too
    assert metrics["allocator"] == ("tcmalloc" if list(Path("/usr/lib").glob("*/libtcmalloc_minimal.so.4")) else "stock")
    sft = json.loads((runs / "sft" / "metrics.json").read_text())
    assert sft["steps"] == 6 and sft["task_eval"]["sft"]["n"] == 8
    seeded = json.loads((runs / "seed" / "metrics.json").read_text())
    assert seeded["candidates_added"] == 32 * 4 and seeded["items_added"] == 32
    prefs = json.loads((runs / "prefs" / "metrics.json").read_text())
    assert prefs["judgments"] == 32 * 2 and prefs["pairs_train"] + prefs["pairs_test"] > 0
    assert (runs / "prefs" / "train.jsonl").exists() and (runs / "prefs" / "corrections.jsonl").exists()
    reward = json.loads((runs / "reward" / "metrics.json").read_text())
    assert reward["steps"] == 4 and reward["pairs"]["test"] == prefs["pairs_test"]
    dpo = json.loads((runs / "dpo" / "metrics.json").read_text())
    assert dpo["steps"] == 3 and dpo["vs_sft"]["greedy, max_new_tokens=8"]["n"] == 8
    assert dpo["implicit_reward_test"]["pairs"] == prefs["pairs_test"]  # make dpo scores the reward model's test pairs
    ppo = json.loads((runs / "ppo" / "metrics.json").read_text())
    assert ppo["steps_completed"] + (ppo["guard"] is not None) >= 1 and "kl" in ppo["vs_sft"]
    # the report card: every section, built from what the stages wrote and the arena's votes
    votes = (runs / "arena" / "votes.jsonl").read_text().splitlines()
    assert len(votes) == 2 * 8 * 6                  # 2 scripted annotators x 8 prompts x C(4 models, 2)
    report = (runs / "eval" / "report.md").read_text()
    for section in ("## Did alignment help?", "## Reward model and the labels behind it", "## Arena: blind side-by-side",
                    "## The same prompts, every model", "## Training", "Ceiling", "held-out perplexity",
                    "| stage | KL budget (nats/answer) | largest KL measured | guard fired |"):
        assert section in report, section
    assert "| pairs | reward model | DPO's implicit reward | label ceiling |" in report  # the two readouts of one set of labels
    ev = json.loads((runs / "eval" / "metrics.json").read_text())
    assert ev["models"] == ["base", "sft", "dpo", "ppo"] and ev["missing"] == ["rloo (make rloo)"]
    preferences = sum(json.loads(v)["choice"] != "both_bad" for v in votes)   # "both bad" rates nobody
    assert ev["arena"]["votes"] == preferences and set(ev["arena"]["rating"]) == {"base", "sft", "dpo", "ppo"}
    assert {"training_curves.png", "lengths.png", "ppo_reward_vs_kl.png"} <= {p.name for p in (runs / "eval/plots").iterdir()}
    assert (runs / "eval" / "report.html").read_text().count("data:image/png;base64,") >= 5
    # a second `make all` finds every stage up to date and reruns none
    again = subprocess.run([*make[:1], str(runs / "eval" / "DONE"), *make[2:], "--question"], cwd=ROOT)
    assert again.returncode == 0
    # ... and make all ended by saying what it found, in a few lines
    tail = r.stdout[r.stdout.rindex("Did alignment help?"):].splitlines()
    summary = tail[:next(i for i, line in enumerate(tail) if line.startswith("Next: ")) + 1]
    assert len(summary) <= 15 and summary[-2].startswith("Report: ") and "make round AUTO=1" in summary[-1]
    # corrections feed SFT when asked for: the SFT stage is then out of date, and only it and not the chain
    with_corr = subprocess.run(["make", "-n", "sft", "SCALE=micro", f"RUNS={runs}", f"DB={db}", "WITH_CORRECTIONS=1"],
                               cwd=ROOT, capture_output=True, text=True)
    assert "--corrections" in with_corr.stdout and "labeling_ui" not in with_corr.stdout

    # one more round, labeled by the scripted annotators: seeded from the newest aligned policy (PPO finishes
    # last), every round's labels exported, reward / DPO / PPO retrained, and the report gains a row
    from labeling_ui.store import Store
    before = {j["id"]: j["choice"] for j in Store(db).judgments()}
    r = subprocess.run(["make", "round", "AUTO=1", "SCALE=micro", f"RUNS={runs}", f"DB={db}"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    store = Store(db)
    rounds = {v["number"]: v["checkpoint"] for v in store.rounds().values()}
    assert rounds == {1: str(runs / "sft" / "model"), 2: str(runs / "ppo" / "model")}
    assert json.loads((runs / "seed" / "metrics.json").read_text())["round"] == 2
    after = {j["id"]: j["choice"] for j in store.judgments()}
    assert len(after) == 2 * len(before) and all(after[i] == c for i, c in before.items())  # nothing lost
    pairs = [json.loads(x) for f in ("train", "test") for x in (runs / "prefs" / f"{f}.jsonl").read_text().splitlines()]
    assert {p["round"] for p in pairs} == {1, 2}
    reward2 = json.loads((runs / "reward" / "metrics.json").read_text())
    assert reward2["pairs"]["train"] + reward2["pairs"]["test"] == len(pairs)
    ev2 = json.loads((runs / "eval" / "metrics.json").read_text())
    assert [x["round"] for x in ev2["rounds"]] == [1, 2] and ev2["rounds"][1]["pairs"] == len(pairs)
    assert "## Rounds" in (runs / "eval" / "report.md").read_text()


def test_args_reach_only_the_named_stage(tmp_path):
    r = subprocess.run(["make", "-n", "sft", f"RUNS={tmp_path}", "ARGS=train.epochs=1"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    commands = r.stdout.replace("\\\n", " ").splitlines()
    world, pretrain, sft = (next(c for c in commands if f"-m {m}" in c) for m in ("pretrain.world", "pretrain.train", "sft.train"))
    assert "train.epochs=1" in sft and "train.epochs=1" not in world + pretrain
