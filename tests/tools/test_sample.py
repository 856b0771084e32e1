"""The sampling CLI prints the decoding settings, completions and the first-step distribution."""

import pytest

from tools import sample


def test_sample_prints_settings_completions_and_top_tokens(base_model_dir, capsys):
    sample.main(["--model", str(base_model_dir), "--prompt", "What is 2 plus 3?", "--temperature", "0.7",
                 "--top-k", "5", "-n", "2", "--max-new-tokens", "4", "--show-top", "3"])
    out = capsys.readouterr().out
    assert "decoding: temperature=0.7, top_k=5, max_new_tokens=4, seed=0, chat template" in out
    assert "prompt: 'What is 2 plus 3?'" in out and "[1] " in out and "[2] " in out
    table = out[out.index("first next token:"):].splitlines()[2:5]
    p_model = [float(line.split()[-4]) for line in table]
    assert p_model == sorted(p_model, reverse=True) and "keeps 5 of" in out


def test_sample_bad_settings_are_one_line_errors(base_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sample.main(["--model", str(base_model_dir), "--prompt", "x", "--top-p", "0"])
    assert e.value.code == 2 and "error: top_p must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sample.main(["--model", str(tmp_path / "none"), "--prompt", "x"])
    assert "directory not found" in capsys.readouterr().err
