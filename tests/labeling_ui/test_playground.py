"""The Playground's rendering (token text is escaped, the panels carry the model's numbers) and its app arguments."""

import pytest

from core.generation import Decoding
from core.lens import Lens
from labeling_ui import app, playground
from tests.labeling_ui.conftest import fill_store


@pytest.fixture(scope="module")
def lens(base_model_dir):
    return Lens(base_model_dir, "sft")


def test_token_text_is_shown_not_rendered(lens):
    assert playground.show(' <b>x</b>\n') == '␣&lt;b&gt;x&lt;/b&gt;↵'
    ids = lens.encode('<script>alert(1)</script> Tom', chat=True)
    out = playground.tokens_html(lens, ids, len(ids) - 1)
    assert "<script" not in out and "&lt;" in out and f"<b>{len(ids)} tokens</b>" in out and "1 appended" in out


def test_next_token_panel_lists_the_models_numbers(lens):
    ids = lens.encode("Tom went to the", chat=False)
    nt = lens.next_token(ids, Decoding(0.7, top_k=3))
    out = playground.next_token_html(lens, nt, rows=5)
    assert "temperature=0.7, top_k=3" in out and "<b id='pg-kept'>3</b>" in out
    assert out.count('class="kept"') == 3 and out.count('class="dropped"') == 2 and "◀ greedy" in out
    assert f"{100 * float(nt.p_model[nt.greedy]):.2f} %" in out
    greedy = playground.next_token_html(lens, lens.next_token(ids, Decoding(0.0)), rows=5)
    assert "greedy (T = 0)" in greedy and "100.00 %" in greedy


def test_loss_compare_and_neighbour_panels(lens):
    ctx = lens.encode("Tom went to the", chat=False)
    cl = lens.loss(ctx, lens.encode_reply("Tom went to the", " park.", chat=False))
    assert f"<b>{cl.mean_nll:.4f}</b>" in playground.loss_html(cl) and "perplexity" in playground.loss_html(cl)
    same = playground.compare_html(lens, lens.next_token(ctx), lens, lens.next_token(ctx), rows=5)
    assert "KL(sft ‖ sft) = 0.0000 nats" in same and "+0.00" in same
    assert "nearest tokens by cosine similarity" in playground.neighbours_html(lens, ctx[-1], k=3)


@pytest.mark.parametrize("model, message", [("sft", "expected NAME=PATH"), ("sft=/nowhere", "no checkpoint at /nowhere")])
def test_bad_model_argument_is_one_line(tmp_path, capsys, model, message):
    db = tmp_path / "labels.db"
    fill_store(db, n_prompts=1)
    with pytest.raises(SystemExit) as e:
        app.main(["--config", "configs/tiny/label.yaml", "--db", str(db), "--model", model])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
