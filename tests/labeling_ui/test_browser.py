"""The app in a real browser: Debian's Chromium driven by Playwright (never `playwright install`)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from labeling_ui.store import Store
from tests.labeling_ui.conftest import HOSTILE, PASSWORDS, fill_store, running_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make chromium` (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def login(browser, url, name):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible(timeout=30_000)
    return page


def test_annotator_judges_ranks_corrects_and_is_refused_the_admin_page(tmp_path, browser):
    from playwright.sync_api import expect
    db = tmp_path / "labels.db"
    fill_store(db, n_prompts=2, overlap=2)  # p000: a pair of hostile completions; p001: a ranking
    shots = Path(os.environ.get("LABEL_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with running_app(db) as (url, _):
        page = login(browser, url, "alice")
        # a pair of completions carrying <script> and an onerror handler: shown as text, never run
        a, b = page.locator("#resp-a textarea"), page.locator("#resp-b textarea")
        expect(a).not_to_have_value("", timeout=15_000)
        page.screenshot(path=str(shots / "label_pair.png"), full_page=True)
        assert {a.input_value(), b.input_value()} == set(HOSTILE)
        assert page.evaluate("window.__pwned") is None and page.locator("img[src='x']").count() == 0
        page.locator("#pair-flags").get_by_label("nonsense").check()
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("1")  # shortcut: A is better
        expect(page.locator("#pair-status textarea")).to_have_value(
            re.compile(r"Saved judgment \d+ \(item \d+: a\)\. Nothing left to compare"), timeout=15_000)
        assert page.evaluate("window.__pwned") is None

        # rank all 4, the last two marked as failing the task, with a correction
        page.get_by_role("tab", name="Rank all").click()
        expect(page.locator("#rank-resp-0 textarea")).not_to_have_value("", timeout=15_000)
        for i, r in enumerate([2, 1, 4, 3]):
            page.locator(f"#rank-{i}").get_by_label(str(r), exact=True).check()
        for i in (2, 3):
            page.locator(f"#rank-fails-{i} input").check()
        page.locator("#rank-correction textarea").fill("3 plus 3 is 6.")
        page.screenshot(path=str(shots / "label_rank.png"), full_page=True)
        page.locator("#btn-rank").click()
        expect(page.locator("#rank-status textarea")).to_have_value(
            re.compile(r"Saved judgment \d+ \(item \d+: ranks \[2, 1, 4, 3\], failing \[3, 4\]\)"), timeout=15_000)

        # the admin page is neither shown to an annotator nor served to one
        expect(page.get_by_role("tab", name="Admin")).to_have_count(0)
        assert "admins only" in page.evaluate("""async () => {
            const r = await fetch('/gradio_api/call/dashboard', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                  body: JSON.stringify({data: []})});
            const {event_id} = await r.json();
            return await (await fetch('/gradio_api/call/dashboard/' + event_id)).text(); }""")

        store = Store(db)
        mine = store.judgments("alice")
        assert [(j["kind"], j["choice"], j["flags"]) for j in mine] == [("pair", "a", ["nonsense"]), ("rank", None, [])]
        assert mine[1]["ranks"] == [2, 1, 4, 3] and mine[1]["correction"] == "3 plus 3 is 6."
        assert mine[1]["bad"] == [False, False, True, True] and mine[0]["bad"] is None

        # the admin sees the dashboard
        admin = login(browser, url, "boss")
        admin.get_by_role("tab", name="Admin").click()
        admin.locator("#btn-dashboard").click()
        expect(admin.get_by_text("Judgments: 2")).to_be_visible(timeout=15_000)
        admin.screenshot(path=str(shots / "label_admin.png"), full_page=True)


def test_playground_temperature_slider_redraws_the_distribution_and_steps_a_token(tmp_path, browser, base_model_dir,
                                                                                  other_model_dir, tokenizer):
    from playwright.sync_api import expect

    db = tmp_path / "labels.db"
    fill_store(db, n_prompts=1)
    shots = Path(os.environ.get("LABEL_SCREENSHOTS", tmp_path))
    with running_app(db, models={"sft": str(base_model_dir), "dpo": str(other_model_dir)}) as (url, _):
        page = login(browser, url, "alice")
        page.get_by_role("tab", name="Playground").click()
        expect(page.locator("#pg-next table")).to_be_visible(timeout=30_000)
        first_p = page.locator("#pg-next td.p-sampler").first
        at_1 = first_p.inner_text()
        n_vocab = len(tokenizer)
        expect(page.locator("#pg-kept")).to_have_text(str(n_vocab))

        # a colder temperature sharpens what the decoder draws from; the model's own column stays
        page.locator("#pg-temperature input[type=range]").fill("0.3")
        expect(first_p).not_to_have_text(at_1, timeout=15_000)
        assert float(first_p.inner_text().split()[0]) > float(at_1.split()[0])
        expect(page.locator("#pg-next-summary")).to_contain_text("temperature=0.3")

        # T = 0 is greedy: one token keeps all the mass; stepping appends exactly that token
        page.locator("#pg-temperature input[type=range]").fill("0")
        expect(page.locator("#pg-kept")).to_have_text("1", timeout=15_000)
        greedy = page.locator("#pg-next tr.kept td").nth(1).locator("code").inner_text()
        n_before = int(page.locator("#pg-token-count b").inner_text().split()[0])
        page.locator("#pg-step-greedy").click()
        expect(page.locator("#pg-token-count")).to_contain_text("1 appended", timeout=15_000)
        assert int(page.locator("#pg-token-count b").inner_text().split()[0]) == n_before + 1
        assert page.locator(".chips .chip").last.inner_text().startswith(greedy)

        # the second checkpoint on the same context
        page.locator("#pg-other input").click()
        page.get_by_role("option", name="dpo").click()
        expect(page.locator("#pg-compare-summary")).to_contain_text("KL(sft ‖ dpo)", timeout=15_000)
        page.screenshot(path=str(shots / "playground.png"), full_page=True)


def test_arena_vote_is_blind_until_cast_and_stored_with_its_sides(tmp_path, browser):
    from playwright.sync_api import expect
    db = tmp_path / "labels.db"
    store = fill_store(db, n_prompts=1)
    prompt = {"id": "h1", "messages": [{"role": "user", "content": "What is 4 plus 1?"}], "task": "arithmetic",
              "expected": 5, "a": 4, "b": 1, "op": "plus"}
    store.add_prompts([prompt])
    for model, text in (("sft", "4 plus 1 is 5."), ("dpo", "4 plus 1 is 6.")):
        store.add_arena_answers(model, f"{model}-sha", [{"prompt_id": "h1", "text": text, "decoding": {}, "seed": 0}])
    with running_app(db) as (url, _):
        page = login(browser, url, "alice")
        page.get_by_role("tab", name="Arena").click()
        a = page.locator("#arena-a textarea")
        expect(a).not_to_have_value("", timeout=15_000)
        assert "What is 4 plus 1?" in page.locator("#arena-prompt textarea").input_value()
        for name in ("sft", "dpo"):   # blind: no model name on the page before the vote
            expect(page.locator("#arena-reveal")).not_to_contain_text(name)
            assert name not in page.locator("#arena-a textarea").input_value() + page.locator("#arena-b textarea").input_value()
        left_text = a.input_value()
        page.locator("#arena-btn-a").click()
        expect(page.locator("#arena-reveal")).to_contain_text("A was", timeout=15_000)
        left = "sft" if left_text == "4 plus 1 is 5." else "dpo"
        right = {"sft": "dpo", "dpo": "sft"}[left]
        expect(page.locator("#arena-reveal")).to_contain_text(f"A was {left}, B was {right}")
        expect(page.locator("#arena-reveal")).to_contain_text("No arena match left")
    v = Store(db).arena_votes()
    assert len(v) == 1 and (v[0]["annotator"], v[0]["choice"], v[0]["left_model"], v[0]["right_model"]) == \
        ("alice", "a", left, right)


def test_logout_and_a_password_reset_end_the_session_in_the_browser(tmp_path, browser):
    from playwright.sync_api import expect
    db = tmp_path / "labels.db"
    store = fill_store(db, n_prompts=4)
    with running_app(db) as (url, _):
        # Log out: back at the login form, and the cookie opens nothing any more
        page = login(browser, url, "alice")
        page.locator("#btn-logout").click()
        expect(page.get_by_label("username")).to_be_visible(timeout=15_000)
        page.goto(url)
        expect(page.get_by_label("username")).to_be_visible(timeout=15_000)
        assert store.sessions("alice") == [] and store.audit_log(1)[0]["action"] == "logout"

        # A password reset (as `make user NAME=bob DO=passwd` does) ends bob's open session at its next click
        page = login(browser, url, "bob")
        expect(page.locator("#resp-a textarea")).not_to_have_value("", timeout=15_000)
        assert len(store.sessions("bob")) == 1
        store.set_password("bob", "a-new-long-password")
        assert store.sessions("bob") == []
        page.locator("#btn-a").click()
        expect(page.get_by_label("username")).to_be_visible(timeout=15_000)
        assert store.judgments("bob") == []
        page.get_by_label("username").fill("bob")
        page.get_by_label("password").fill(PASSWORDS["bob"])  # the old password no longer works
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect credentials")).to_be_visible(timeout=15_000)
        page.get_by_label("username").fill("bob")
        page.get_by_label("password").fill("a-new-long-password")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Signed in as bob")).to_be_visible(timeout=30_000)


def test_script_in_a_correction_or_a_login_name_is_shown_as_text_and_never_runs(tmp_path, browser):
    from playwright.sync_api import expect
    db = tmp_path / "labels.db"
    fill_store(db, n_prompts=4)
    planted = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 1</script> 5 & 6'
    with running_app(db) as (url, _):
        page = login(browser, url, "alice")
        expect(page.locator("#resp-a textarea")).not_to_have_value("", timeout=15_000)
        status = page.locator("#pair-status textarea")
        page.locator("#pair-correction textarea").fill("7.\x07")          # a control character: refused, text kept
        page.locator("#btn-both-bad").click()
        expect(status).to_have_value(re.compile(r"Not saved: correction has a control character \(U\+0007\)"),
                                     timeout=15_000)
        assert page.locator("#pair-correction textarea").input_value() == "7.\x07"
        page.locator("#pair-correction textarea").fill(planted)
        page.locator("#btn-both-bad").click()
        expect(status).to_have_value(re.compile(r"Saved judgment"), timeout=15_000)
        assert Store(db).judgments("alice")[0]["correction"] == planted
        page.get_by_role("tab", name="My history").click()
        page.locator("#btn-history").click()
        expect(page.get_by_test_id("cell-0-5")).to_have_text(planted[:80], timeout=15_000)  # the correction column
        assert page.evaluate("window.__pwned") is None and page.locator("img[src='x']").count() == 0

        # a stranger types markup as a user name; the admin reads it in the audit trail, as text
        stranger = browser.new_page()
        stranger.goto(url)
        stranger.get_by_label("username").fill(planted)
        stranger.get_by_label("password").fill("whatever-it-is")
        stranger.get_by_role("button", name="Login").click()
        expect(stranger.get_by_text("Incorrect credentials")).to_be_visible(timeout=15_000)
        admin = login(browser, url, "boss")
        admin.get_by_role("tab", name="Admin").click()
        admin.locator("#btn-audit").click()
        expect(admin.locator("span.text", has_text=planted).first).to_have_text(planted, timeout=15_000)
        assert admin.evaluate("window.__pwned") is None and admin.locator("img[src='x']").count() == 0
