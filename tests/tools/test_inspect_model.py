"""`make inspect`: the Playground's panels as text, and one-line errors for bad input."""

import pytest

from tools import inspect_model


def test_inspect_prints_every_panel(base_model_dir, capsys):
    inspect_model.main(["--model", str(base_model_dir), "--text", "What is 2 plus 3?", "--chat", "--temperature", "0.7",
                        "--top-k", "4", "--rows", "5", "--steps", "2", "--token", "7",
                        "--continuation", "2 plus 3 is 5.", "--compare", str(base_model_dir)])
    out = capsys.readouterr().out
    assert "'<|user|>'" in out and "'<|assistant|>'" in out                  # the chat template's tokens
    assert out.count("decoder (temperature=0.7, top_k=4") == 3 and "keeps 4 of" in out   # steps 0, 1, 2
    table = out[out.index("next token:"):].splitlines()[2:7]
    p_model = [float(line.split()[-4]) for line in table]
    assert p_model == sorted(p_model, reverse=True)
    assert "KL(a||b) = 0.0000 nats" in out                                    # a model against itself
    assert "nearest tokens of" in out and "mean -log p (cross-entropy)" in out and "perplexity" in out


@pytest.mark.parametrize("args, message", [
    (["--top-p", "0"], "error: top_p must be in (0, 1]"),
    (["--token", "Tom went to the park"], "not one"),
    (["--continuation", ""], None),
])
def test_inspect_bad_input_is_one_line(base_model_dir, capsys, args, message):
    if message is None:  # an empty continuation is simply not scored
        inspect_model.main(["--model", str(base_model_dir), "--text", "Tom", *args])
        assert "cross-entropy" not in capsys.readouterr().out
        return
    with pytest.raises(SystemExit) as e:
        inspect_model.main(["--model", str(base_model_dir), "--text", "Tom", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_inspect_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        inspect_model.main(["--model", str(tmp_path / "none"), "--text", "Tom"])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
