"""Seed (micro model) -> scripted annotators -> export, through the same store API the app uses."""

import json
import subprocess
import sys

import pytest

from core.config import UserError, load_config
from core.data import check_chat_rows, load_rows
from labeling_ui import auto, export, seed
from labeling_ui.config import LabelConfig
from labeling_ui.pairs import aggregate
from labeling_ui.store import Store


def cfg(**over):
    return load_config(LabelConfig, None, [f"{k}={v}" for k, v in over.items()])


def test_seeding_is_idempotent_records_provenance_and_scores_margins(tmp_path, base_model_dir, world_dir,
                                                                     reward_model_dir, monkeypatch):
    db, prompts = tmp_path / "l.db", world_dir / "prompts_train.jsonl"
    calls = []
    real = Store.add_candidates

    def crash_on_third_pass(self, rows):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed halfway")
        return real(self, rows)

    monkeypatch.setattr(Store, "add_candidates", crash_on_third_pass)
    with pytest.raises(KeyboardInterrupt):
        seed.main(cfg(**{"seed.prompts": 12, "seed.max_new_tokens": 6}), str(base_model_dir), str(prompts), str(db),
                  str(tmp_path / "seed"))
    monkeypatch.setattr(Store, "add_candidates", real)
    assert not (tmp_path / "seed/DONE").exists() and Store(db).counts()["candidates"] == 24
    # the rerun adds only the missing candidates (each keyed by prompt, checkpoint, decoding, seed)
    m = seed.main(cfg(**{"seed.prompts": 12, "seed.max_new_tokens": 6}), str(base_model_dir), str(prompts), str(db),
                  str(tmp_path / "seed"), reward_model=str(reward_model_dir))
    assert m["candidates_added"] == 24 and m["candidates_scored_by_reward_model"] == 48
    again = seed.main(cfg(**{"seed.prompts": 12, "seed.max_new_tokens": 6}), str(base_model_dir), str(prompts),
                      str(db), str(tmp_path / "seed"))
    assert again["candidates_added"] == 0 and again["items_added"] == 0 and again["prompts_generated"] == 0
    store = Store(db)
    cands = store.candidates()
    assert len(cands) == 48 and len({(c["prompt_id"], c["seed"]) for c in cands}) == 48
    assert {c["checkpoint_sha"] for c in cands} == {m["checkpoint_sha256"]}
    assert len({json.dumps(c["decoding"], sort_keys=True) for c in cands}) == 4
    assert all(c["rm_score"] is not None and c["n_tokens"] >= 1 for c in cands)
    items = store.items()
    assert len(items) == 12 and {i["kind"] for i in items} == {"pair", "rank"}
    assert all(len(i["candidate_ids"]) == (2 if i["kind"] == "pair" else 4) and i["margin"] >= 0 for i in items)


def test_an_ensemble_scores_candidates_by_its_mean(tmp_path, base_model_dir, world_dir, reward_model_dir, tokenizer):
    import shutil

    from transformers import AutoModelForSequenceClassification

    from core.reward import load_reward_model, reward_scores
    stage = tmp_path / "reward"
    shutil.copytree(reward_model_dir, stage / "model")
    other = AutoModelForSequenceClassification.from_config(
        AutoModelForSequenceClassification.from_pretrained(reward_model_dir).config)   # fresh random weights
    other.save_pretrained(stage / "ensemble" / "1")
    tokenizer.save_pretrained(stage / "ensemble" / "1")
    db = tmp_path / "l.db"
    seed.main(cfg(**{"seed.prompts": 2, "seed.max_new_tokens": 4}), str(base_model_dir),
              str(world_dir / "prompts_train.jsonl"), str(db), str(tmp_path / "seed"), reward_model=str(stage / "model"))
    store = Store(db)
    prompts, cands = store.prompts(), store.candidates()
    convs = [prompts[c["prompt_id"]]["messages"] + [{"role": "assistant", "content": c["text"]}] for c in cands]
    each = [reward_scores(*load_reward_model(p), convs) for p in (stage / "model", stage / "ensemble" / "1")]
    assert each[0] != each[1]
    assert [c["rm_score"] for c in cands] == pytest.approx([(a + b) / 2 for a, b in zip(*each)], abs=1e-5)


def test_a_hub_style_prompt_set_seeds_multi_turn_prompts_and_the_app_shows_earlier_turns(tmp_path, base_model_dir):
    """UltraFeedback-like rows (prompt text + prompt_id) and chat rows with earlier turns, mapped by prompt_source."""
    from labeling_ui.app import prompt_text_of
    src = tmp_path / "uf.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt_id": "p1", "prompt": "Name a colour.", "messages": [{"role": "user", "content": "Name a colour."}]},
        {"prompt_id": "p2", "prompt": "unused", "messages": [
            {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Count to 3."}, {"role": "assistant", "content": "1 2 3"}]}]))
    c = cfg(**{"seed.prompts": 0, "seed.max_new_tokens": 4, "prompt_source.id": "prompt_id"})
    m = seed.main(c, str(base_model_dir), str(src), str(tmp_path / "l.db"), str(tmp_path / "seed"))
    assert m["prompts"] == 2 and m["candidates_added"] == 8
    stored = Store(tmp_path / "l.db").prompts()
    assert [x["role"] for x in stored["p2"]["messages"]] == ["user", "assistant", "user"]
    assert prompt_text_of(stored["p2"]).index("[assistant] Hello.") < prompt_text_of(stored["p2"]).index("Count to 3.")


def test_bad_prompt_rows_and_an_empty_store_fail_with_a_clear_error(tmp_path, base_model_dir):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n"
                   + json.dumps({"messages": []}) + "\n")
    r = subprocess.run([sys.executable, "-m", "labeling_ui.seed", "--config", "configs/tiny/label.yaml",
                        "--model", str(base_model_dir), "--prompts", str(bad), "--db", str(tmp_path / "l.db"),
                        "--out", str(tmp_path / "seed")], capture_output=True, text=True)
    assert r.returncode == 2 and "row 2 has no column 'id' (columns: messages); set prompt_source.prompt" in r.stderr
    assert not (tmp_path / "seed/DONE").exists()
    with pytest.raises(UserError, match="no judgments yet"):
        export.main(cfg(), str(tmp_path / "empty.db"), str(tmp_path / "prefs"))
    with pytest.raises(UserError, match="unknown persona"):
        cfg(**{"auto.annotators": '[{persona: grumpy}]'})


def test_scripted_annotators_fill_every_item_and_export_round_trips(tmp_path, base_model_dir, world_dir, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template
    db = tmp_path / "l.db"
    # An untrained model's answers are mostly equally bad (they tie and give no pair): 40 prompts leave pairs on both sides.
    c = cfg(**{"seed.prompts": 40, "seed.max_new_tokens": 24, "auto.correction_rate": 1.0, "export.test_fraction": 0.4})
    seed.main(c, str(base_model_dir), str(world_dir / "prompts_train.jsonl"), str(db), str(tmp_path / "seed"))
    m = auto.main(c, str(db), str(tmp_path / "auto"))
    store = Store(db)
    assert m["judgments_added"] == 40 * 3 and all(i["n_judged"] == 3 for i in store.items())
    assert auto.main(c, str(db), str(tmp_path / "auto"))["judgments_added"] == 0  # nothing left, nothing twice
    # a ranking marks the responses its annotator finds under half right: they rank last and give no vote between them
    team, prompts = dict(auto.team(c, store)), store.prompts()
    cand_text = {cand["id"]: cand["text"] for cand in store.candidates()}
    ranked = [j for j in store.judgments() if j["kind"] == "rank"]
    for j in ranked:
        fails = [team[j["annotator"]].fails(prompts[j["prompt_id"]], cand_text[cid]) for cid in j["shown_order"]]
        assert j["bad"] == (fails if any(fails) else None)
    assert any(j["bad"] for j in ranked) and any(not all(j["bad"] or [False]) for j in ranked)

    out = tmp_path / "prefs"
    metrics = export.main(c, str(db), str(out))
    train, test = load_rows(out / "train.jsonl"), load_rows(out / "test.jsonl")
    assert len(train) == metrics["pairs_train"] > 0 and len(test) == metrics["pairs_test"] > 0
    assert not {r["prompt_id"] for r in train} & {r["prompt_id"] for r in test}
    expected = {(p["prompt_id"], p["chosen"], p["rejected"]) for p in aggregate(store.judgments())}
    got = {(r["prompt_id"], r["chosen_source"]["candidate_id"], r["rejected_source"]["candidate_id"]) for r in train + test}
    assert got == expected
    texts = {cand["id"]: cand["text"] for cand in store.candidates()}
    for r in train + test:
        assert is_conversational(r) and r["prompt"][0]["role"] == "user"
        assert r["chosen"] == [{"role": "assistant", "content": texts[r["chosen_source"]["candidate_id"]]}]
        assert r["chosen_source"]["checkpoint_sha256"] and r["chosen_source"]["decoding"]
        assert r["kind"] in ("capability", "preference") and r["rubric_agrees"] in (0.0, 0.5, 1.0)
        rendered = maybe_apply_chat_template({k: r[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
        assert rendered["chosen"].endswith("<|eos|>")
    # an untrained model answers (almost) nothing right: the items it got all wrong got the reference as correction
    corrections = load_rows(out / "corrections.jsonl")
    assert len(corrections) == metrics["corrections"] > 40 * 2
    refs = {p["id"]: p["reference"] for p in load_rows(world_dir / "prompts_train.jsonl")}
    assert all(r["messages"][-1]["content"] == refs[r["prompt_id"]] for r in corrections)
    kept, bad = check_chat_rows(corrections, "corrections.jsonl", tokenizer, 128, skip_bad=False)
    assert len(kept) == len(corrections) and not bad
    before = (out / "train.jsonl").read_text()
    export.main(c, str(db), str(out))
    assert (out / "train.jsonl").read_text() == before  # deterministic


def hub_prompts(path, n: int = 6):
    """UltraFeedback-like rows: a prompt text and an id, no world task."""
    path.write_text("".join(json.dumps({"prompt_id": f"u{i}", "prompt": f"Say something about {w}."}) + "\n"
                            for i, w in enumerate(["cats", "rain", "bread", "maps", "owls", "snow"][:n])))
    return path


def test_a_reward_model_judge_labels_prompts_that_are_not_the_worlds(tmp_path, base_model_dir, reward_model_dir):
    from core.reward import load_reward_model, reward_scores
    db, src = tmp_path / "l.db", hub_prompts(tmp_path / "uf.jsonl")
    over = {"seed.prompts": 0, "seed.max_new_tokens": 6, "prompt_source.prompt": "prompt",
            "prompt_source.id": "prompt_id", "export.test_fraction": 0.0}
    seed.main(cfg(**over), str(base_model_dir), str(src), str(db), str(tmp_path / "seed"))
    with pytest.raises(UserError, match="'u.' is not a world prompt.*set auto.judge.kind reward_model or llm"):
        auto.main(cfg(**over), str(db), str(tmp_path / "auto"))
    assert not (tmp_path / "auto/DONE").exists()

    c = cfg(**over, **{"auto.judge.kind": "reward_model", "auto.judge.path": str(reward_model_dir)})
    m = auto.main(c, str(db), str(tmp_path / "auto"))
    store = Store(db)
    assert m["by_annotator"] == {"auto-reward_model": 6} and all(i["n_judged"] == 1 for i in store.items())
    model, tok = load_reward_model(reward_model_dir)
    prompts, texts = store.prompts(), {x["id"]: x["text"] for x in store.candidates()}
    for j in store.judgments():
        scores = reward_scores(model, tok, [prompts[j["prompt_id"]]["messages"]
                                            + [{"role": "assistant", "content": texts[c]}] for c in j["shown_order"]])
        if j["kind"] == "pair":   # a pair: the higher score wins
            assert j["choice"] == ("a" if scores[0] > scores[1] else "b" if scores[1] > scores[0] else "tie")
        else:             # a ranking: by score, 1 = best
            assert j["ranks"] == [1 + sum(t > s for t in scores) for s in scores]
        assert not j["flags"] and j["correction"] is None
    prefs = export.main(c, str(db), str(tmp_path / "prefs"))
    rows = load_rows(tmp_path / "prefs/train.jsonl")
    assert len(rows) == prefs["pairs_train"] > 0 and all(r["kind"] is None and r["rubric_agrees"] is None for r in rows)
