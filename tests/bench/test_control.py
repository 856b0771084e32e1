"""The control bench: shuffled labels keep every pair's content and lose only its direction."""

import json

from bench.control import both_ways, seeds_table, shuffle_labels, table


def _rows(n):
    return [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"good{i}"}],
             "rejected": [{"role": "assistant", "content": f"bad{i}"}], "rubric_agrees": 1.0} for i in range(n)]


def test_shuffle_swaps_about_half_reproducibly_and_keeps_the_pairs():
    rows = _rows(400)
    out = shuffle_labels(rows, seed=0)
    swapped = [r for r in out if r["label_swapped"]]
    assert 160 <= len(swapped) <= 240
    assert out == shuffle_labels(rows, seed=0) != shuffle_labels(rows, seed=1)
    for before, after in zip(rows, out):
        assert {before["chosen"][0]["content"], before["rejected"][0]["content"]} == \
               {after["chosen"][0]["content"], after["rejected"][0]["content"]}
        assert after["chosen"][0]["content"].startswith("bad" if after["label_swapped"] else "good")
        assert after["rubric_agrees"] == (0.0 if after["label_swapped"] else 1.0)
    assert rows[0]["chosen"][0]["content"] == "good0"          # the input is not modified
    rows[1]["rejected"][0]["content"] = " "
    assert len(shuffle_labels(rows, seed=0)) == 399             # a pair with an empty answer is left out


def test_both_ways_writes_every_pair_once_each_way_so_no_direction_is_left():
    rows = _rows(50)
    rows[3]["chosen"][0]["content"] = ""
    out = both_ways(rows)
    assert len(out) == 98 and sum(r["label_swapped"] for r in out) == 49          # the empty pair left out
    for a, b in zip(out[::2], out[1::2]):
        assert (a["chosen"], a["rejected"]) == (b["rejected"], b["chosen"]) and a["prompt"] == b["prompt"]
        assert (a["label_swapped"], a["rubric_agrees"], b["label_swapped"], b["rubric_agrees"]) == (False, 1.0, True, 0.0)
    wins = {}
    for r in out:                                       # every answer is chosen exactly as often as it is rejected
        wins[r["chosen"][0]["content"]] = wins.get(r["chosen"][0]["content"], 0) + 1
        wins[r["rejected"][0]["content"]] = wins.get(r["rejected"][0]["content"], 0) - 1
    assert set(wins.values()) == {0}


def _stage(d, metrics):
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "DONE").write_text("")


def _policy(win):
    r = {"win_rate": win, "ci95": [win - 0.05, win + 0.05], "length_controlled_win_rate": 0.5, "correct_a": 0.8,
         "correct_b": 0.8}
    return {"vs_sft": {"greedy": r, "kl": {"kl_per_sequence": 1.5}}}


def test_tables_put_the_real_run_next_to_the_control_and_the_seeds(tmp_path):
    runs = tmp_path / "runs"
    _stage(runs / "reward", {"test": {"accuracy": 0.9}, "label_ceiling": 0.95})
    _stage(runs / "dpo", _policy(0.8))
    _stage(runs / "control" / "0" / "dpo", _policy(0.5))
    _stage(runs / "seeds" / "1" / "dpo", _policy(0.7))
    rows = table(runs, runs / "control")
    assert rows[0] == ["stage", "measure", "real labels", "shuffled labels, shuffle 0"]   # one shuffle: no spread
    assert rows[1] == ["reward model", "held-out pair accuracy", "90.0 % (ceiling 95.0 %)", ""]
    assert rows[2][2].startswith("80.0 % (75.0 %-85.0 %), length-controlled 50.0 %") and rows[2][3].startswith("50.0 %")
    seeds = seeds_table(runs, runs / "seeds")
    assert seeds[0] == ["stage", "measure", "seed 0", "seed 1"]
    assert seeds[2][2].startswith("80.0 %") and seeds[2][3].startswith("70.0 %") and seeds[3][2:] == ["1.50", "1.50"]


def test_several_shuffles_get_a_column_each_in_order_and_their_mean_and_range(tmp_path):
    runs = tmp_path / "runs"
    _stage(runs / "dpo", _policy(0.8))
    _stage(runs / "reward", {"test": {"accuracy": 0.9}})
    for n, win, acc in (("10", 0.36, 0.40), ("2", 0.64, 0.50), ("1", 0.50, 0.45)):
        _stage(runs / "control" / n / "dpo", _policy(win))
        _stage(runs / "control" / n / "reward", {"test": {"accuracy": acc}})
    (runs / "control" / "prefs").mkdir()                       # not a shuffle's folder
    rows = table(runs, runs / "control")
    assert rows[0][3:] == ["shuffled labels, shuffle 1", "shuffled labels, shuffle 2", "shuffled labels, shuffle 10",
                           "shuffles: mean (range)"]
    assert rows[1][3:] == ["45.0 %", "50.0 %", "40.0 %", "45.0 % (40.0 %-50.0 %)"]
    assert [c[:6] for c in rows[2][2:6]] == ["80.0 %", "50.0 %", "64.0 %", "36.0 %"]
    assert rows[2][6] == "50.0 % (36.0 %-64.0 %)"
    (runs / "control" / "2" / "dpo" / "DONE").unlink()         # an unfinished shuffle: an empty cell, left out of the mean
    row = table(runs, runs / "control")[2]
    assert row[4] == "not run" and row[5].startswith("36.0 %") and row[6] == "43.0 % (36.0 %-50.0 %)"


def test_dpos_implicit_reward_gets_a_row_where_a_run_scored_it(tmp_path):
    runs = tmp_path / "runs"
    implicit = lambda acc, cap: {"implicit_reward_test": {"accuracy": acc, "by_kind": {"capability": {"accuracy": cap}}}}
    _stage(runs / "dpo", {**_policy(0.8), **implicit(0.788, 0.774)})
    _stage(runs / "control" / "0" / "dpo", {**_policy(0.5), **implicit(0.581, 0.606)})
    rows = table(runs, runs / "control")
    assert rows[1] == ["DPO", "implicit reward, held-out pair accuracy", "78.8 %, capability 77.4 %",
                       "58.1 %, capability 60.6 %"]
    assert rows[2][1] == "win rate vs SFT, greedy"
    _stage(runs / "seeds" / "1" / "dpo", _policy(0.7))   # a seed run from before the stage scored it: an empty cell
    assert seeds_table(runs, runs / "seeds")[2] == ["DPO", "implicit reward, held-out pair accuracy",
                                                     "78.8 %, capability 77.4 %", ""]


def test_the_reward_row_gives_the_ensembles_mean_where_one_was_trained(tmp_path):
    runs = tmp_path / "runs"
    _stage(runs / "reward", {"test": {"accuracy": 0.9}, "label_ceiling": 0.95, "ensemble": {"mean_score_accuracy": 0.92}})
    assert table(runs, runs / "control")[1][2] == "90.0 % (ceiling 95.0 %); the ensemble's mean 92.0 %"


def test_the_run_on_the_pairs_both_ways_gets_its_own_column_outside_the_shuffles_spread(tmp_path):
    runs = tmp_path / "runs"
    _stage(runs / "dpo", _policy(0.8))
    for n, win in (("0", 0.40), ("1", 0.60), ("both", 0.52)):
        _stage(runs / "control" / n / "dpo", _policy(win))
    rows = table(runs, runs / "control")
    assert rows[0][3:] == ["shuffled labels, shuffle 0", "shuffled labels, shuffle 1", "shuffles: mean (range)",
                           "every pair both ways"]
    assert rows[1][5] == "50.0 % (40.0 %-60.0 %)" and rows[1][6].startswith("52.0 % (47.0-57.0)")
    for n in ("0", "1"):
        (runs / "control" / n / "dpo" / "DONE").unlink()
    assert table(runs, runs / "control")[1][3:] == ["not run", "not run", "", rows[1][6]]


def test_the_shuffle_command_writes_both_ways_and_refuses_an_unknown_seed(tmp_path, monkeypatch, capsys):
    import pytest
    from bench import control
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)))
    out = tmp_path / "both" / "prefs" / "train.jsonl"
    monkeypatch.setattr("sys.argv", ["control", "shuffle", "--train", str(src), "--out", str(out), "--seed", "both"])
    control.main()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["label_swapped"] for r in rows] == [False, True] * 3
    assert "6 pairs, 3 swapped (seed both)" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["control", "shuffle", "--train", str(src), "--out", str(out), "--seed", "all"])
    with pytest.raises(SystemExit, match="--seed all: give a number"):
        control.main()
