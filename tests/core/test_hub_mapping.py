"""What the GPU configs rely on, checked offline: hub-style column mappings and adopting a base model."""

import json

import pytest

from core.config import UserError, load_config
from core.data import PreferenceColumns, load_preferences
from sft.train import messages_rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ultrafeedback_style_whole_conversations_map_to_prompt_and_replies(tmp_path):
    user = {"role": "user", "content": "What is 2 plus 3?"}
    rows = [{"prompt": "What is 2 plus 3?", "prompt_id": "x",
             "chosen": [user, {"role": "assistant", "content": "5."}],
             "rejected": [user, {"role": "assistant", "content": "6."}]}]
    got = load_preferences(_write(tmp_path / "uf.jsonl", rows), PreferenceColumns(prompt=""))
    assert got[0]["prompt"] == [user]
    assert got[0]["chosen"] == [{"role": "assistant", "content": "5."}]
    assert got[0]["rejected"] == [{"role": "assistant", "content": "6."}]


def test_hh_style_transcripts_under_other_column_names(tmp_path):
    rows = [{"good": "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?",
             "bad": "\n\nHuman: Hi there\n\nAssistant: Go away."}]
    got = load_preferences(_write(tmp_path / "hh.jsonl", rows), PreferenceColumns(prompt="", chosen="good", rejected="bad"))
    assert got[0]["prompt"] == [{"role": "user", "content": "Hi there"}]
    assert got[0]["chosen"] == [{"role": "assistant", "content": "Hello, how can I help?"}]
    assert got[0]["rejected"] == [{"role": "assistant", "content": "Go away."}]


def test_multi_turn_transcripts_keep_their_turns_and_a_transcript_prompt_is_parsed(tmp_path):
    """HH-RLHF rows are whole dialogues: every earlier turn is the prompt, in roles, without the "Human:" markup."""
    shared = "\n\nHuman: What is 2 plus 3?\n\nAssistant: 5.\n\nHuman: And times 2?"
    rows = [{"chosen": shared + "\n\nAssistant: 10.", "rejected": shared + "\n\nAssistant: 7."},
            {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": "Hello.", "rejected": "Go away."}]
    got = load_preferences(_write(tmp_path / "hh.jsonl", rows))
    assert got[0]["prompt"] == [{"role": "user", "content": "What is 2 plus 3?"},
                                {"role": "assistant", "content": "5."},
                                {"role": "user", "content": "And times 2?"}]
    assert got[0]["chosen"] == [{"role": "assistant", "content": "10."}]
    assert got[0]["rejected"] == [{"role": "assistant", "content": "7."}]
    assert got[1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert not any("Human:" in m["content"] or "Assistant:" in m["content"] for r in got for m in r["prompt"])


@pytest.mark.parametrize("row, message", [
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: c"},
     r"row 1: 'chosen' and 'rejected' differ before their last reply \(at turn 1\)"),
    ({"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": "\n\nHuman: a\n\nHuman: b\n\nAssistant: d"},
     r"row 1 \('chosen'\): transcript turns go user -> user -> assistant"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "rejected": "\n\nHuman: a\n\nAssistant: d"},
     r"row 1 \('chosen'\): .*ending with Assistant"),
    ({"chosen": "hello", "rejected": "bye"}, r"row 1: no 'prompt', so 'chosen' and 'rejected' must be whole conversations"),
    ({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
      "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}]},
     r"row 1: 'chosen' and 'rejected' differ before their last reply \(at turn 2\)"),
])
def test_a_wrong_or_ambiguous_transcript_names_the_row(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        load_preferences(_write(tmp_path / "bad.jsonl", [row]))


def test_a_wrong_column_mapping_names_the_column_and_the_knob(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(UserError, match=r"no column 'answer_a'.*columns\.prompt / columns\.chosen"):
        load_preferences(path, PreferenceColumns(prompt="", chosen="answer_a"))
    with pytest.raises(UserError, match="data.messages_column"):
        messages_rows([{"conversation": []}], "messages_x", "d.jsonl")
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert messages_rows([{"conversation": conv}], "conversation", "d.jsonl") == [{"messages": conv}]


def test_init_from_adopts_a_base_model_without_the_chat_contract(tmp_path, base_model_dir):
    """A 'hub' base whose tokenizer has pad = eos, no BOS and no chat template: the pretrain stage with
    init_from adopts it instead of training, and the result keeps the contract and loads in stock transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.tokenizer import check_chat_contract
    from pretrain import train as pt
    hub = tmp_path / "hub"
    AutoModelForCausalLM.from_pretrained(base_model_dir).save_pretrained(hub)
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    tok.pad_token, tok.chat_template = tok.eos_token, None
    tok.save_pretrained(hub)
    with pytest.raises(UserError, match="chat contract broken"):
        check_chat_contract(AutoTokenizer.from_pretrained(hub))
    cfg = load_config(pt.PretrainConfig, None, [f"init_from={hub}", "train.sample_tokens=4"])
    m = pt.main(cfg, "unused.jsonl", "unused.jsonl", str(tmp_path / "pretrain"))
    assert m["init_from"] == str(hub) and (tmp_path / "pretrain/DONE").exists()
    adopted = AutoTokenizer.from_pretrained(tmp_path / "pretrain/model")
    check_chat_contract(adopted)
    assert adopted.pad_token_id != adopted.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "pretrain/model")
    assert model.config.pad_token_id == adopted.pad_token_id and model.get_input_embeddings().num_embeddings >= len(adopted)


def test_hub_split_syntax_is_parsed_without_touching_the_network(monkeypatch):
    import datasets

    from core import data
    seen = {}
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, config, split: seen.update(repo=repo, config=config,
                                                                                        split=split) or [{"text": "x"}])
    assert data.load_rows("hf:HuggingFaceFW/fineweb-edu:sample-10BT@train[:1%]") == [{"text": "x"}]
    assert seen == {"repo": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT", "split": "train[:1%]"}
    data.load_rows("hf:HuggingFaceH4/ultrafeedback_binarized@test_prefs")
    assert seen == {"repo": "HuggingFaceH4/ultrafeedback_binarized", "config": None, "split": "test_prefs"}
