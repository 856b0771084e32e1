"""Prompt sets for labeling and rollouts: the world's rows, local files and hub-style columns, mapped by
`prompt_source`; bad sets fail before any work with the row and the knob named."""

import json

import pytest

from core.config import UserError
from core.data import PromptSource, fit_prompts, load_prompts


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_world_rows_pass_through_with_their_task_fields(world_dir):
    rows = load_prompts(world_dir / "prompts_train.jsonl")
    raw = [json.loads(line) for line in (world_dir / "prompts_train.jsonl").read_text().splitlines()]
    assert rows == raw  # ids are unique there: nothing renamed, dropped or added


def test_hub_style_columns_map_to_id_and_turns(tmp_path):
    uf = _write(tmp_path / "uf.jsonl", [
        {"prompt": "Name a colour.", "prompt_id": "a1", "messages": [{"role": "user", "content": "Name a colour."},
                                                                   {"role": "assistant", "content": "Red."}]}])
    got = load_prompts(uf, PromptSource(prompt="prompt", id="prompt_id"))
    assert got[0]["id"] == "a1" and got[0]["messages"] == [{"role": "user", "content": "Name a colour."}]
    # The chat column instead: the dataset's own reply is dropped, the earlier turns are kept.
    got = load_prompts(uf, PromptSource(prompt="messages", id="prompt_id"))
    assert got[0]["messages"] == [{"role": "user", "content": "Name a colour."}]
    multi = _write(tmp_path / "multi.jsonl", [{"id": 7, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Count to 3."}, {"role": "assistant", "content": "1 2 3"}]}])
    got = load_prompts(multi)
    assert got[0]["id"] == "7" and [m["role"] for m in got[0]["messages"]] == ["user", "assistant", "user"]
    # AlpacaEval-style: instruction text, no id column (ids derived from the prompt; a repeat counts once).
    alpaca = _write(tmp_path / "ae.jsonl", [{"instruction": "Say hi."}, {"instruction": "Say bye."},
                                            {"instruction": "Say hi."}])
    got = load_prompts(alpaca, PromptSource(prompt="instruction", id=""))
    assert [r["messages"][0]["content"] for r in got] == ["Say hi.", "Say bye."] and len({r["id"] for r in got}) == 2
    hh = _write(tmp_path / "hh.jsonl", [{"id": "h", "messages": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant:"}])
    assert load_prompts(hh)[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                                                {"role": "user", "content": "Bye?"}]


@pytest.mark.parametrize("rows, columns, message", [
    ([{"question": "q"}], PromptSource(), r"row 1 has no column 'messages' \(columns: question\); set prompt_source\.prompt"),
    ([{"id": "a", "messages": "  "}], PromptSource(), r"row 1: column 'messages' holds no prompt"),
    ([{"id": "a", "messages": [{"role": "assistant", "content": "hi"}]}], PromptSource(), "holds no prompt"),
    ([{"id": "a", "messages": "x"}, {"id": "a", "messages": "y"}], PromptSource(), r"row 2: id 'a' already names another prompt"),
    ([{"id": None, "messages": "x"}], PromptSource(), r"row 1: id column 'id' must hold a non-empty string"),
    ([], PromptSource(), "the prompt set is empty"),
])
def test_a_bad_prompt_set_names_the_row_and_the_knob(tmp_path, rows, columns, message):
    with pytest.raises(UserError, match=message):
        load_prompts(_write(tmp_path / "p.jsonl", rows), columns, "prompt_source")


def test_prompts_too_long_for_the_context_fail_or_are_skipped(tmp_path, tokenizer):
    rows = load_prompts(_write(tmp_path / "p.jsonl", [{"id": "short", "messages": "Hi."},
                                                      {"id": "long", "messages": "one two three " * 40}]))
    with pytest.raises(UserError, match=r"prompt 'long' \(row 2\) is \d+ tokens; with 48 to answer it does not fit "
                                         r"the 100-token context; shorten it or set prompt_source\.skip_too_long"):
        fit_prompts(rows, tokenizer, 100, 48, PromptSource(), "p.jsonl", "prompt_source")
    kept = fit_prompts(rows, tokenizer, 100, 48, PromptSource(skip_too_long=True), "p.jsonl")
    assert [r["id"] for r in kept] == ["short"]
    with pytest.raises(UserError, match="no prompt fits"):
        fit_prompts(rows, tokenizer, 10, 48, PromptSource(skip_too_long=True), "p.jsonl")
