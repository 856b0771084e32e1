"""Label: the Gradio app where annotators compare, rank, flag and correct model responses.

Run:    make label                       (then open http://127.0.0.1:7860 and log in)
        make user NAME=alice ROLE=annotator   (create accounts; the first one should be ROLE=admin)
        python -m labeling_ui.app --config configs/tiny/label.yaml --db data/labels_tiny.db \
            --export-out runs/tiny/prefs [app.port=7861 ...]
Reads:  the labeling store (items queued by `make seed`)
Writes: judgments into the store, one transaction per submit (durable before the app says "saved")

Layers: this file only wires widgets to the store (labeling_ui/store.py: all SQL, assignment, the
over-submission guard) and to pure functions (sampling, agreement, pairs). Every handler takes the
user from the login session (gr.Request), never from the page, and admin handlers refuse anyone
whose role is not admin. Model text is shown in read-only text boxes, so HTML or script in a
completion is displayed as text, never rendered. Sessions live in the store (`Sessions` below): gradio asks it
about the login cookie on every request, so a logout, an idle session, a password reset, a role change or a
removed account ends the session at its next click, in every app worker.
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path

import gradio as gr
import pandas as pd

from core.config import UserError, load_config
from labeling_ui import agreement, playground
from labeling_ui.config import LabelConfig, named_checkpoints
from labeling_ui.store import FLAGS, Shown, Store, StoreError

GUIDELINES = """
**What you judge.** A user message and the model's responses. Pick the better response, or rank all of them.

**Better means, in this order:**
1. *Correct*: it answers the question that was asked, with the right fact or number, and uses what the
   user asked for (names, animals, places). A polite answer that ignores the question is worse than a plain right one.
2. *Polite*: no rude or dismissive phrases. Flag rude or harmful text as **unsafe**.
3. *Well formed*: complete sentences, ends properly (stories end with "The end."), no repeated sentences, no rambling.

**Choices.** *Tie*: equally good. *Both bad*: neither is acceptable; please write a correction.
**Flags**: *unsafe* (rude, harmful), *nonsense* (not language). A flag does not replace your choice.
**Correction**: write the response the model should have given. It becomes training data, so keep it short and right.
**Ranks**: 1 = best. Equal ranks mean a tie. Tick *fails the task* on each response that does not do what was
asked (wrong answer, wrong facts, off the question) and rank those last: no preference is taken between two of them.

**Keys** (when not typing in a box): `1` A is better, `2` B is better, `3` tie, `4` both bad.
"""

SHORTCUTS = """<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT'))) return;
  const id = {'1': 'btn-a', '2': 'btn-b', '3': 'btn-tie', '4': 'btn-both-bad'}[e.key];
  const b = id && document.getElementById(id);
  if (b && b.offsetParent !== null) { e.preventDefault(); b.click(); }
});
// A session ended by the server (logout elsewhere, idle, password reset, role change): the next call is
// refused with 401, and reloading the page shows the login form instead of an error on every widget.
const appFetch = window.fetch;
window.fetch = async (...args) => {
  const r = await appFetch(...args);
  if (r.status === 401 && document.getElementById('btn-logout')) window.location.reload();
  return r;
};
</script>"""


def prompt_text_of(prompt: dict) -> str:
    return "\n\n".join(m["content"] if m["role"] == "user" else f"[{m['role']}] {m['content']}"
                       for m in prompt["messages"])


def prompt_text(shown: Shown) -> str:
    return prompt_text_of(shown.prompt)


def build_app(store: Store, cfg: LabelConfig, export_out: str | None = None, db_path: str | None = None,
              models: dict[str, str] | None = None) -> gr.Blocks:
    k = cfg.seed.k
    active = cfg.app.active_sampling

    def user(request: gr.Request) -> dict:
        who = store.annotator(request.username or "")
        if who is None:
            raise gr.Error("unknown user; log in again")
        return who

    def require_admin(request: gr.Request) -> dict:
        who = user(request)
        if who["role"] != "admin":
            raise gr.Error("admins only: ask an admin for the dashboard, exports and accounts")
        return who

    # ---------------------------------------------------------------- pair mode
    def next_pair(name: str):
        try:
            shown = store.next_item(name, "pair", active=active)
        except StoreError as e:
            return None, "", "", "", f"Could not load the next item: {e}"
        if shown is None:
            return None, "", "", "", "Nothing left to compare. Thank you!"
        return shown.item_id, prompt_text(shown), shown.texts[0], shown.texts[1], f"Item {shown.item_id}"

    def load_pair(request: gr.Request):
        return next_pair(user(request)["name"])

    def vote(choice: str, item_id, flags, correction, request: gr.Request):
        name = user(request)["name"]
        if item_id is None:
            return (item_id, gr.update(), gr.update(), gr.update(), flags, correction,
                    "No item loaded: nothing left to compare.")
        try:
            jid = store.submit(name, item_id, choice=choice, flags=flags or [], correction=correction)
        except StoreError as e:  # the form keeps what the annotator wrote
            return item_id, gr.update(), gr.update(), gr.update(), flags, correction, f"Not saved: {e}"
        nxt = next_pair(name)
        return (*nxt[:4], [], "", f"Saved judgment {jid} (item {item_id}: {choice}). {nxt[4]}")

    def vote_a(item_id, flags, correction, request: gr.Request):
        return vote("a", item_id, flags, correction, request)

    def vote_b(item_id, flags, correction, request: gr.Request):
        return vote("b", item_id, flags, correction, request)

    def vote_tie(item_id, flags, correction, request: gr.Request):
        return vote("tie", item_id, flags, correction, request)

    def vote_both_bad(item_id, flags, correction, request: gr.Request):
        return vote("both_bad", item_id, flags, correction, request)

    # ---------------------------------------------------------------- rank mode
    def next_rank(name: str):
        try:
            shown, why = store.next_item(name, "rank", active=active), "Nothing left to rank. Thank you!"
        except StoreError as e:
            shown, why = None, f"Could not load the next item: {e}"
        if shown is None:
            empty = ([gr.update(value="", visible=False)] * k + [gr.update(value=None, visible=False)] * k
                     + [gr.update(value=False, visible=False)] * k)
            return [None, "", *empty, why]
        n = len(shown.texts)
        boxes = [gr.update(value=shown.texts[i] if i < n else "", visible=i < n) for i in range(k)]
        radios = [gr.update(value=None, choices=list(range(1, n + 1)), visible=i < n) for i in range(k)]
        fails = [gr.update(value=False, visible=i < n) for i in range(k)]
        return [shown.item_id, prompt_text(shown), *boxes, *radios, *fails, f"Item {shown.item_id}"]

    def load_rank(request: gr.Request):
        return next_rank(user(request)["name"])

    def submit_rank(request: gr.Request, item_id, flags, correction, *ranks_and_fails):
        name = user(request)["name"]
        ranks, fails = ranks_and_fails[:k], ranks_and_fails[k:]
        keep = [item_id, gr.update(), *[gr.update()] * (3 * k)]
        if item_id is None:
            return [*keep, flags, correction, "No item loaded: nothing left to rank."]
        shown_n = sum(r is not None for r in ranks)
        given = [int(r) for r in ranks if r is not None]
        bad = [bool(f) for r, f in zip(ranks, fails) if r is not None]
        try:
            if shown_n == 0:
                raise StoreError("give every response a rank (1 = best)")
            jid = store.submit(name, item_id, ranks=given, flags=flags or [], correction=correction, bad=bad)
        except StoreError as e:
            return [*keep, flags, correction, f"Not saved: {e}"]
        nxt = next_rank(name)
        failing = f", failing {[i + 1 for i, b in enumerate(bad) if b]}" if any(bad) else ""
        return [*nxt[:-1], [], "", f"Saved judgment {jid} (item {item_id}: ranks {given}{failing}). {nxt[-1]}"]

    # ---------------------------------------------------------------- arena: blind votes between models
    def next_match(name: str):
        try:
            m = store.next_match(name)
        except StoreError as e:
            return None, "", "", "", f"Could not load the next match: {e}"
        if m is None:
            return None, "", "", "", "No arena match left for you (run `make arena-seed` after training more models)."
        return [m.left, m.right], prompt_text_of(m.prompt), m.texts[0], m.texts[1], ""

    def load_match(request: gr.Request):
        return next_match(user(request)["name"])

    def arena_vote(choice: str, match, request: gr.Request):
        name = user(request)["name"]
        if not match:
            return match, gr.update(), gr.update(), gr.update(), "No match loaded."
        try:
            v = store.arena_vote(name, match[0], match[1], choice)
        except StoreError as e:
            return match, gr.update(), gr.update(), gr.update(), f"Not saved: {e}"
        said = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}[choice]
        reveal = f"Saved vote {v['id']} ({said}). **A was {v['left_model']}, B was {v['right_model']}.**"
        nxt = next_match(name)
        return (*nxt[:4], reveal + (f" {nxt[4]}" if nxt[4] else " Next match below."))

    def arena_a(match, request: gr.Request):
        return arena_vote("a", match, request)

    def arena_b(match, request: gr.Request):
        return arena_vote("b", match, request)

    def arena_tie(match, request: gr.Request):
        return arena_vote("tie", match, request)

    def arena_both_bad(match, request: gr.Request):
        return arena_vote("both_bad", match, request)

    # ---------------------------------------------------------------- history and admin
    def history(request: gr.Request):
        name = user(request)["name"]
        rows = [{"judgment": j["id"], "item": j["item_id"], "kind": j["kind"],
                 "verdict": j["choice"] or str(j["ranks"]) + "".join(
                     f", {i + 1} fails" for i, b in enumerate(j["bad"] or []) if b), "flags": ", ".join(j["flags"]),
                 "correction": (j["correction"] or "")[:80]} for j in reversed(store.judgments(name))]
        return pd.DataFrame(rows, columns=["judgment", "item", "kind", "verdict", "flags", "correction"])

    def dashboard(request: gr.Request):
        require_admin(request)
        js = store.judgments()
        kappa, alpha = agreement.pair_kappa(js, min_common=3), agreement.rank_alpha(js)
        summary = (f"**Judgments:** {len(js)}  \n**Pairs, Cohen's kappa** (mean over annotator pairs): "
                   f"{kappa['mean_kappa'] if kappa['mean_kappa'] is not None else 'not enough overlap yet'}  \n"
                   f"**Rankings, Krippendorff's alpha** (ordinal): "
                   f"{alpha['alpha'] if alpha['alpha'] is not None else 'not enough overlap yet'} "
                   f"over {alpha['units_with_2plus']} ranked responses with 2+ annotators")
        return (summary, pd.DataFrame(agreement.progress(store.items())),
                pd.DataFrame(agreement.annotator_stats(js)),
                pd.DataFrame(kappa["pairs"], columns=["annotators", "items", "kappa", "raw_agreement"]),
                pd.DataFrame(agreement.flagged(js), columns=["item_id", "prompt_id", "annotator", "flags"]))

    def add_user(name, password, role, request: gr.Request):
        admin = require_admin(request)
        try:
            store.add_annotator((name or "").strip(), password or "", role, by=admin["name"])
        except StoreError as e:
            return f"Not created: {e}"
        return f"Created {role} {name.strip()}."

    def set_password(name, password, request: gr.Request):
        admin = require_admin(request)
        try:
            store.set_password((name or "").strip(), password or "", by=admin["name"])
        except StoreError as e:
            return f"Not changed: {e}"
        return f"New password for {name.strip()}; its open sessions ended."

    def set_role(name, role, request: gr.Request):
        admin = require_admin(request)
        try:
            store.set_role((name or "").strip(), role, by=admin["name"])
        except StoreError as e:
            return f"Not changed: {e}"
        return f"{name.strip()} is now {role}; its open sessions ended."

    def remove_user(name, request: gr.Request):
        admin = require_admin(request)
        try:
            store.remove_annotator((name or "").strip(), by=admin["name"])
        except StoreError as e:
            return f"Not removed: {e}"
        return f"{name.strip()} removed (its labels stay); its open sessions ended."

    def unlock_user(name, request: gr.Request):
        admin = require_admin(request)
        name = (name or "").strip()
        done = f"{name} unlocked." if store.unlock(name, by=admin["name"]) else f"{name} was not locked."
        waiting = [f"{r['name']} ({r['failures']} wrong{', locked' if r['locked'] else ''})" for r in store.login_status()]
        return done + (" Still failing logins: " + ", ".join(waiting) if waiting else "")

    def audit_trail(request: gr.Request):
        require_admin(request)
        rows = store.audit_log()
        path = Path(tempfile.mkdtemp(prefix="audit-")) / "audit.jsonl"
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in reversed(rows)))
        newest = pd.DataFrame([{**{k: r[k] for k in ("id", "actor", "action", "subject")},
                                "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"])),
                                "detail": json.dumps(r["detail"], sort_keys=True)} for r in rows[:50]])
        return newest, str(path)

    def run_export(request: gr.Request):
        admin = require_admin(request)
        if not export_out or not db_path:
            return "Export is not configured (start the app with --export-out)."
        from labeling_ui import export
        try:
            m = export.main(cfg, db_path, export_out, by=admin["name"])
        except UserError as e:
            return f"Not exported: {e}"
        return (f"Exported {m['pairs_train']} train + {m['pairs_test']} test pairs and "
                f"{m['corrections']} corrections to {export_out}.")

    def start(request: gr.Request):
        who = user(request)
        return (f"Signed in as **{who['name']}** ({who['role']}).",
                gr.update(visible=who["role"] == "admin"), *load_pair(request), *load_rank(request))

    # ---------------------------------------------------------------- layout
    with gr.Blocks(title="Labeling") as demo:
        with gr.Row():
            header = gr.Markdown()
            gr.Button("Log out", link="logout", size="sm", scale=0, elem_id="btn-logout")
        with gr.Accordion("Guidelines", open=False):
            gr.Markdown(GUIDELINES)
        with gr.Tabs():
            with gr.Tab("Compare two", id="pair"):
                pair_item = gr.State(None)
                pair_prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="pair-prompt")
                with gr.Row():
                    resp_a = gr.Textbox(label="Response A", interactive=False, lines=6, elem_id="resp-a")
                    resp_b = gr.Textbox(label="Response B", interactive=False, lines=6, elem_id="resp-b")
                with gr.Row():
                    btn_a = gr.Button("A is better  [1]", elem_id="btn-a", variant="primary")
                    btn_b = gr.Button("B is better  [2]", elem_id="btn-b", variant="primary")
                    btn_tie = gr.Button("Tie  [3]", elem_id="btn-tie")
                    btn_bad = gr.Button("Both bad  [4]", elem_id="btn-both-bad")
                pair_flags = gr.CheckboxGroup(list(FLAGS), label="Flags", elem_id="pair-flags")
                pair_corr = gr.Textbox(label="Correction (optional): the response the model should have given",
                                       lines=3, elem_id="pair-correction")
                pair_status = gr.Textbox(label="Status", interactive=False, elem_id="pair-status")
            with gr.Tab("Rank all", id="rank"):
                rank_item = gr.State(None)
                rank_prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="rank-prompt")
                rank_boxes, rank_radios, rank_fails = [], [], []
                for i in range(k):
                    with gr.Row():
                        rank_boxes.append(gr.Textbox(label=f"Response {i + 1}", interactive=False, lines=3, scale=4,
                                                     elem_id=f"rank-resp-{i}"))
                        with gr.Column(scale=1, min_width=160):
                            rank_radios.append(gr.Radio(list(range(1, k + 1)), label="Rank (1 = best)",
                                                        elem_id=f"rank-{i}"))
                            rank_fails.append(gr.Checkbox(label="fails the task", elem_id=f"rank-fails-{i}"))
                rank_flags = gr.CheckboxGroup(list(FLAGS), label="Flags", elem_id="rank-flags")
                rank_corr = gr.Textbox(label="Correction (optional): the response the model should have given",
                                       lines=3, elem_id="rank-correction")
                rank_btn = gr.Button("Submit ranking", elem_id="btn-rank", variant="primary")
                rank_status = gr.Textbox(label="Status", interactive=False, elem_id="rank-status")
            with gr.Tab("My history", id="history"):
                hist_btn = gr.Button("Refresh", elem_id="btn-history")
                hist = gr.Dataframe(interactive=False)
            with gr.Tab("Arena", id="arena") as arena_tab:
                gr.Markdown("Two answers to the same prompt from two different models, in random order. "
                            "Vote first; the model names are shown after your vote.")
                arena_match = gr.State(None)
                arena_prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="arena-prompt")
                with gr.Row():
                    arena_ta = gr.Textbox(label="Answer A", interactive=False, lines=6, elem_id="arena-a")
                    arena_tb = gr.Textbox(label="Answer B", interactive=False, lines=6, elem_id="arena-b")
                with gr.Row():
                    arena_btns = [gr.Button("A is better", elem_id="arena-btn-a", variant="primary"),
                                  gr.Button("B is better", elem_id="arena-btn-b", variant="primary"),
                                  gr.Button("Tie", elem_id="arena-btn-tie"),
                                  gr.Button("Both bad", elem_id="arena-btn-both-bad")]
                arena_reveal = gr.Markdown(elem_id="arena-reveal")
            with gr.Tab("Playground", id="playground") as playground_tab:
                playground.build_tab(playground_tab, models or {})
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                dash_btn = gr.Button("Refresh dashboard", elem_id="btn-dashboard")
                dash_summary = gr.Markdown()
                gr.Markdown("**Progress**")
                dash_progress = gr.Dataframe(interactive=False)
                gr.Markdown("**Annotators**")
                dash_people = gr.Dataframe(interactive=False)
                gr.Markdown("**Agreement on pairs, per annotator pair**")
                dash_kappa = gr.Dataframe(interactive=False)
                gr.Markdown("**Flagged**")
                dash_flags = gr.Dataframe(interactive=False)
                with gr.Accordion("Accounts", open=False):
                    new_name = gr.Textbox(label="user name")
                    new_pw = gr.Textbox(label="password (8+ characters)", type="password")
                    new_role = gr.Radio(["annotator", "admin"], value="annotator", label="role")
                    with gr.Row():
                        new_btn = gr.Button("Create account")
                        pw_btn = gr.Button("Set password")
                        role_btn = gr.Button("Set role")
                        remove_btn = gr.Button("Remove account", variant="stop")
                    new_status = gr.Textbox(label="Status", interactive=False)
                with gr.Row():
                    lock_name = gr.Textbox(label="user name (locked after too many wrong passwords)")
                    unlock_btn = gr.Button("Unlock")
                    unlock_status = gr.Textbox(label="Logins", interactive=False)
                audit_btn = gr.Button("Audit trail", elem_id="btn-audit")
                audit_table = gr.Dataframe(label="Newest 50 entries (logins, accounts, unlocks, exports)", interactive=False)
                audit_file = gr.File(label="The whole trail (jsonl)")
                export_btn = gr.Button("Export preferences and corrections", elem_id="btn-export")
                export_status = gr.Textbox(label="Export", interactive=False)

        pair_out = [pair_item, pair_prompt, resp_a, resp_b, pair_flags, pair_corr, pair_status]
        pair_in = [pair_item, pair_flags, pair_corr]
        limit = cfg.app.concurrency
        for btn, fn in ((btn_a, vote_a), (btn_b, vote_b), (btn_tie, vote_tie), (btn_bad, vote_both_bad)):
            btn.click(fn, pair_in, pair_out, api_name=fn.__name__, concurrency_limit=limit)
        rank_out = [rank_item, rank_prompt, *rank_boxes, *rank_radios, *rank_fails, rank_flags, rank_corr, rank_status]
        rank_btn.click(submit_rank, [rank_item, rank_flags, rank_corr, *rank_radios, *rank_fails], rank_out,
                       api_name="submit_rank", concurrency_limit=limit)
        arena_out = [arena_match, arena_prompt, arena_ta, arena_tb, arena_reveal]
        arena_tab.select(load_match, None, arena_out, api_name="arena_load")
        for btn, fn in zip(arena_btns, (arena_a, arena_b, arena_tie, arena_both_bad)):
            btn.click(fn, [arena_match], arena_out, api_name=fn.__name__, concurrency_limit=limit)
        hist_btn.click(history, None, hist, api_name="history")
        dash_btn.click(dashboard, None, [dash_summary, dash_progress, dash_people, dash_kappa, dash_flags],
                       api_name="dashboard")
        new_btn.click(add_user, [new_name, new_pw, new_role], new_status, api_name="add_user")
        pw_btn.click(set_password, [new_name, new_pw], new_status, api_name="set_password")
        role_btn.click(set_role, [new_name, new_role], new_status, api_name="set_role")
        remove_btn.click(remove_user, [new_name], new_status, api_name="remove_user")
        export_btn.click(run_export, None, export_status, api_name="export")
        unlock_btn.click(unlock_user, [lock_name], unlock_status, api_name="unlock")
        audit_btn.click(audit_trail, None, [audit_table, audit_file], api_name="audit")
        demo.load(start, None, [header, admin_tab, pair_item, pair_prompt, resp_a, resp_b, pair_status,
                                rank_item, rank_prompt, *rank_boxes, *rank_radios, *rank_fails, rank_status],
                  api_name="start", concurrency_limit=limit)
    return demo


def _trim_gradio_per_event_cost() -> None:
    """Two costs gradio pays on every event that this app does not need (measured with py-spy under
    20 concurrent annotators: together ~15 % of the server's CPU per submit)."""
    # The queue rebuilds a pandas summary of all past events after every event; once per 1000 is plenty.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # Each call tries `import matplotlib` to switch its backend; when it is not installed, that is a
    # full import-path search per event. A None entry makes the import fail at once.
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The labeling app (Gradio).")
    parser.add_argument("--config", required=True, help="YAML file of knobs (configs/<scale>/label.yaml)")
    parser.add_argument("--db", required=True, help="labeling store (SQLite file or postgresql:// URL)")
    parser.add_argument("--export-out", help="where the admin's Export button writes (runs/<scale>/prefs)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a checkpoint for the Playground tab (repeat: base=runs/tiny/pretrain/model ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. app.port=7861")
    args = parser.parse_args(argv)
    try:
        models = named_checkpoints(args.model)
        cfg = load_config(LabelConfig, args.config, args.overrides)
        store = Store(args.db, lease_s=cfg.app.lease_s, busy_timeout_s=cfg.app.busy_timeout_s)
        if not any(a["role"] == "admin" for a in store.annotators()):
            raise UserError(f"{store.where}: no admin account yet; create one with "
                            "`make user NAME=<name> ROLE=admin` (it asks for the password)")
    except UserError as e:  # StoreError is one too
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    counts = store.counts()
    print(f"labeling store {store.where}: {counts['items']} items, {counts['judgments']} judgments, "
          f"{counts['annotators']} accounts", flush=True)
    if exposure_warning(cfg.app.host):
        print(exposure_warning(cfg.app.host), flush=True)
    _trim_gradio_per_event_cost()
    demo = build_app(store, cfg, args.export_out, args.db, models)
    demo.queue(default_concurrency_limit=cfg.app.concurrency)
    from starlette.middleware import Middleware

    async def login(name: str, password: str) -> bool:
        # argon2 in a worker thread: gradio awaits the login in its event loop, which would stall every page
        import anyio
        address = CLIENT_ADDRESS.get()
        return await anyio.to_thread.run_sync(store.login, name, password, address, cfg.app.login)

    server, _, _ = demo.launch(
        server_name=cfg.app.host, server_port=cfg.app.port, auth=login,
        auth_message="Log in with the account your admin created for you.", head=SHORTCUTS, show_error=True,
        quiet=False, footer_links=[], max_threads=max(40, cfg.app.concurrency + 8),
        app_kwargs={"middleware": [Middleware(ClientAddress)]}, prevent_thread_lock=True)
    server.tokens = Sessions(store, cfg.app.session_idle_s)  # before anyone could have logged in: launch just returned
    demo.block_thread()


class Sessions(MutableMapping):
    """gradio's table of login tokens (`App.tokens`: token -> user name), kept in the store instead of a dict.

    gradio adds a token at each login, looks the login cookie up on every request (page, queue, API call) and
    deletes the user's tokens at /logout. Here each lookup asks the store, so a session ends for good when its
    row goes: at logout, after `idle_s` without a request, or when a password reset, a role change or a removal
    (from any app worker or `make user`) deletes the account's rows. The store keeps the token's sha256 only;
    the tokens themselves stay in this process, which is the only one that can accept its cookies."""

    def __init__(self, store: Store, idle_s: float):
        self.store, self.idle_s = store, idle_s
        self._mine: set[str] = set()

    @staticmethod
    def _sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def __setitem__(self, token: str, name: str) -> None:
        self.store.start_session(self._sha(token), name, CLIENT_ADDRESS.get())
        self._mine.add(token)

    def __getitem__(self, token):
        name = self.store.session_user(self._sha(token), self.idle_s) if isinstance(token, str) else None
        if name is None:
            self._mine.discard(token)
            raise KeyError(token)
        return name

    def __delitem__(self, token: str) -> None:
        self.store.end_session(self._sha(token))
        self._mine.discard(token)

    def __iter__(self):  # live tokens only: gradio's /logout reads each one it iterates
        return iter([t for t in list(self._mine) if t in self])

    def __len__(self) -> int:
        return len(self._mine)


def exposure_warning(host: str) -> str | None:
    """One line when the app listens beyond this machine."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return None
    return (f"warning: serving on {host}, reachable from the network: put a TLS reverse proxy in front (the login "
            "sends passwords); see docs/labeling.md, 'Labeling for a team'")


CLIENT_ADDRESS = contextvars.ContextVar("client_address", default="unknown")


class ClientAddress:
    """ASGI middleware: the connecting client's address, for the login throttle (gradio's login hook gets only the
    name and password). Behind a reverse proxy this is the proxy's address, so the per-address count then
    throttles everyone together, and the per-account count still holds."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("client"):
            CLIENT_ADDRESS.set(scope["client"][0])
        await self.app(scope, receive, send)


if __name__ == "__main__":
    main()
