"""Playground: the labeling app's tab that shows what a checkpoint does with text.

Tokens, a token's nearest embeddings, the next-token distribution under temperature / top-k /
top-p, one step or a whole continuation, the loss of a given continuation, and two checkpoints
side by side. The numbers come from core/lens.py (the model's own logits); this file renders
them as HTML (every token piece escaped: model text is never markup) and wires the widgets.
`make inspect` prints the same panels in a terminal (tools/inspect_model.py).
"""

from __future__ import annotations

import html
import threading

from core.config import UserError
from core.generation import Decoding
from core.lens import ContinuationLoss, Lens, NextToken, check_comparable, kl

DEFAULT_CONTEXT = "Tom has a red ball. Tom went to the park with"


def show(piece: str) -> str:
    """A token piece made visible: spaces as ␣, newlines as ↵, escaped for HTML."""
    return html.escape(piece.replace(" ", "␣").replace("\n", "↵"))


def _pct(p: float) -> str:
    return f"{100 * p:.2f} %" if p >= 0.0001 else ("0 %" if p == 0 else "<0.01 %")


# ---------------------------------------------------------------- panels (pure: numbers in, HTML out)

def tokens_html(lens: Lens, ids: list[int], n_context: int) -> str:
    chips = []
    for i, t in enumerate(ids):
        hue = (t * 47) % 360
        extra = "border:2px solid #c2410c;" if i >= n_context else ""
        chips.append(f'<span class="chip" title="id {t}" style="background:hsl({hue},70%,88%);{extra}">'
                     f'{show(lens.piece(t))}<sub>{t}</sub></span>')
    new = len(ids) - n_context
    return (f'<div id="pg-token-count"><b>{len(ids)} tokens</b>'
            f'{f" ({n_context} in the context, {new} appended, outlined)" if new else ""}</div>'
            f'<div class="chips">{"".join(chips)}</div>')


def next_token_html(lens: Lens, nt: NextToken, rows: int) -> str:
    d, kept = nt.decoding, nt.kept
    setting = "greedy (T = 0): all mass on the argmax" if d.temperature == 0 else str(d).rsplit(", max_new", 1)[0]
    summary = (f"Decoding: <b>{html.escape(setting)}</b>. The decoder keeps <b id='pg-kept'>{int(kept.sum())}</b> "
               f"of {len(kept)} tokens, holding {_pct(float(nt.p_model[kept].sum()))} of the model's probability. "
               f"Entropy of the model's distribution: {nt.entropy:.2f} nats.")
    if nt.p_padding >= 1e-4:
        summary += f" The model puts {_pct(nt.p_padding)} on padding rows of its embedding (never emitted)."
    body = []
    for rank, t in enumerate(nt.top(rows), 1):
        ps, pm = float(nt.p_sampler[t]), float(nt.p_model[t])
        mark = " ◀ greedy" if t == nt.greedy else ""
        body.append(f'<tr class="{"kept" if kept[t] else "dropped"}"><td>{rank}</td>'
                    f'<td><code>{show(lens.piece(t))}</code>{mark}</td><td>{t}</td>'
                    f'<td>{_pct(pm)}</td><td class="p-sampler">{_pct(ps)}</td>'
                    f'<td class="bars"><div class="bar model" style="width:{100 * pm:.1f}%"></div>'
                    f'<div class="bar sampler" style="width:{100 * ps:.1f}%"></div></td></tr>')
    return (f'<div id="pg-next-summary">{summary}</div>'
            '<table class="pg"><tr><th>#</th><th>token</th><th>id</th><th>p model = softmax(z)</th>'
            '<th>p decoder = softmax(z/T), filtered</th><th>grey: model, orange: decoder</th></tr>'
            f'{"".join(body)}</table>')


def compare_html(a: Lens, nta: NextToken, b: Lens, ntb: NextToken, rows: int) -> str:
    ids = list(dict.fromkeys(nta.top(rows) + ntb.top(rows)))
    ids.sort(key=lambda t: -max(float(nta.p_model[t]), float(ntb.p_model[t])))
    body = "".join(
        f'<tr><td><code>{show(a.piece(t))}</code></td><td>{t}</td><td>{_pct(float(nta.p_model[t]))}</td>'
        f'<td>{_pct(float(ntb.p_model[t]))}</td><td>{100 * float(ntb.p_model[t] - nta.p_model[t]):+.2f}</td></tr>'
        for t in ids)
    na, nb = html.escape(a.name), html.escape(b.name)
    return (f'<div id="pg-compare-summary">Greedy pick: {na} <code>{show(a.piece(nta.greedy))}</code>, '
            f'{nb} <code>{show(b.piece(ntb.greedy))}</code>. KL({na} ‖ {nb}) = {kl(nta.p_model, ntb.p_model):.4f} nats, '
            f'KL({nb} ‖ {na}) = {kl(ntb.p_model, nta.p_model):.4f} nats (model distributions, T = 1).</div>'
            f'<table class="pg"><tr><th>token</th><th>id</th><th>p {na}</th><th>p {nb}</th>'
            f'<th>change (points)</th></tr>{body}</table>')


def neighbours_html(lens: Lens, token_id: int, k: int = 10) -> str:
    v = lens.embedding(token_id)
    head = ", ".join(f"{x:+.2f}" for x in v[:6].tolist())
    body = "".join(f'<tr><td><code>{show(lens.piece(t))}</code></td><td>{t}</td><td>{s:.3f}</td></tr>'
                   for t, s in lens.neighbours(token_id, k))
    return (f'<div>Token <code>{show(lens.piece(token_id))}</code> (id {token_id}) is a vector of {len(v)} numbers '
            f'[{head}, ...], length {float(v.norm()):.2f}. Its nearest tokens by cosine similarity:</div>'
            f'<table class="pg"><tr><th>token</th><th>id</th><th>cosine</th></tr>{body}</table>')


def loss_html(cl: ContinuationLoss) -> str:
    body = "".join(f'<tr><td><code>{show(t.piece)}</code></td><td>{t.token_id}</td><td>{_pct(t.p)}</td>'
                   f'<td>{t.nll:.3f}</td><td class="bars"><div class="bar nll" '
                   f'style="width:{min(100.0, 10 * t.nll):.1f}%"></div></td></tr>' for t in cl.tokens)
    return (f'<div id="pg-loss-summary">Mean -log p over {len(cl.tokens)} tokens (the cross-entropy loss): '
            f'<b>{cl.mean_nll:.4f}</b> nats; perplexity exp(loss) = <b>{cl.perplexity:.2f}</b>.</div>'
            '<table class="pg"><tr><th>token</th><th>id</th><th>p(token | before)</th><th>-log p</th>'
            f'<th></th></tr>{body}</table>')


CSS = """
.chips { display: flex; flex-wrap: wrap; gap: 3px; line-height: 1.8em; }
.chip { padding: 0 4px; border-radius: 4px; font-family: monospace; }
.chip sub { color: #555; font-size: 0.7em; margin-left: 2px; }
table.pg { border-collapse: collapse; font-size: 0.9em; width: 100%; margin: 4px 0; }
table.pg td, table.pg th { padding: 1px 6px !important; border: none !important; border-bottom: 1px solid #eee !important;
  text-align: left; line-height: 1.4; }
table.pg tr.kept { background: #fff7ed; } table.pg tr.dropped { color: #999; }
td.bars { width: 35%; } .bar { height: 7px; margin: 1px 0; } .bar.model { background: #9ca3af; }
.bar.sampler { background: #ea580c; } .bar.nll { background: #2563eb; }
"""


# ---------------------------------------------------------------- the tab

class Checkpoints:
    """Checkpoints by name, each loaded on first use and kept (one Lens per checkpoint, thread-safe)."""

    def __init__(self, paths: dict[str, str]):
        self.paths, self._lenses, self._lock = dict(paths), {}, threading.Lock()

    def __getitem__(self, name: str) -> Lens:
        if name not in self.paths:
            raise UserError(f"no checkpoint named {name!r}; the app knows {', '.join(self.paths) or 'none'}")
        with self._lock:
            if name not in self._lenses:
                self._lenses[name] = Lens(self.paths[name], name)
            return self._lenses[name]


def build_tab(tab, paths: dict[str, str]) -> None:
    """The Playground's widgets and events; call inside `tab` (a checkpoint loads when the tab is first opened)."""
    import gradio as gr
    ckpts = Checkpoints(paths)
    names = list(paths)

    def guarded(fn):
        def run(*args):
            try:
                return fn(*args)
            except UserError as e:
                raise gr.Error(str(e)) from None
        return run

    def decoding(temperature, top_k, top_p) -> Decoding:
        return Decoding(float(temperature), int(top_k), float(top_p))

    def panels(name, other, chat, text, gen, temperature, top_k, top_p, rows):
        lens = ckpts[name]
        ctx = lens.encode(text or "", bool(chat))
        ids, dec, rows = ctx + list(gen), decoding(temperature, top_k, top_p), int(rows)
        nt = lens.next_token(ids, dec)
        cmp = ""
        if other and other not in ("(none)", name):
            b = ckpts[other]
            check_comparable(lens, b)
            cmp = compare_html(lens, lens.next_token(ids), b, b.next_token(ids), rows)
        return tokens_html(lens, ids, len(ctx)), next_token_html(lens, nt, rows), cmp

    def step(name, other, chat, text, gen, temperature, top_k, top_p, rows, seed, greedy: bool):
        lens = ckpts[name]
        ids = lens.encode(text or "", bool(chat)) + list(gen)
        dec = Decoding() if greedy else decoding(temperature, top_k, top_p)
        gen = list(gen) + [lens.step(ids, dec, int(seed or 0))]
        return gen, *panels(name, other, chat, text, gen, temperature, top_k, top_p, rows)

    def step_greedy(*args):
        return step(*args, greedy=True)

    def step_sample(*args):
        return step(*args, greedy=False)

    def continue_(name, other, chat, text, gen, temperature, top_k, top_p, rows, seed, max_new):
        lens = ckpts[name]
        ids = lens.encode(text or "", bool(chat)) + list(gen)
        dec = Decoding(float(temperature), int(top_k), float(top_p), int(max_new or 1))
        gen = list(gen) + lens.continue_(ids, dec, int(seed or 0)).token_ids
        return gen, *panels(name, other, chat, text, gen, temperature, top_k, top_p, rows)

    def reset(name, other, chat, text, temperature, top_k, top_p, rows):
        return [], *panels(name, other, chat, text, [], temperature, top_k, top_p, rows)

    def neighbours(name, chat, text, gen, token):
        lens = ckpts[name]
        ids = lens.encode(text or "", bool(chat)) + list(gen)
        return neighbours_html(lens, lens.token_id(token) if (token or "").strip() else ids[-1])

    def score(name, chat, text, gen, continuation):
        lens = ckpts[name]
        ctx = lens.encode(text or "", bool(chat))
        cont = lens.encode_reply(text or "", continuation, bool(chat)) if (continuation or "").strip() else list(gen)
        return loss_html(lens.loss(ctx, cont))

    gr.HTML(f"<style>{CSS}</style>")
    if not names:
        gr.Markdown("No checkpoints: start the app with `--model NAME=PATH` (`make label` passes every finished stage).")
        return
    gr.Markdown("Type a context and watch what the model does with it. Every number is computed from the "
                "model's own logits *z* for the next token.")
    with gr.Row():
        name = gr.Dropdown(names, value=names[-1] if "sft" not in names else "sft", label="Checkpoint",
                           elem_id="pg-model")
        other = gr.Dropdown(["(none)"] + names, value="(none)", label="Compare with", elem_id="pg-other")
        chat = gr.Checkbox(False, label="Chat template (wrap the text as a user turn, as SFT/DPO/PPO models see it)",
                           elem_id="pg-chat")
    text = gr.Textbox(DEFAULT_CONTEXT, label="Context", lines=2, elem_id="pg-context")
    gen = gr.State([])
    gr.Markdown("**Tokens**: the ids the model reads (hover for the id; ␣ is a space).")
    tokens = gr.HTML(elem_id="pg-tokens")
    with gr.Row():
        temperature = gr.Slider(0, 2, 1.0, step=0.05, label="Temperature T (0 = greedy)", elem_id="pg-temperature")
        top_k = gr.Slider(0, 50, 0, step=1, label="top-k (0 = off)", elem_id="pg-top-k")
        top_p = gr.Slider(0.05, 1, 1.0, step=0.05, label="top-p (1 = off)", elem_id="pg-top-p")
        rows = gr.Slider(5, 30, 10, step=1, label="rows shown", elem_id="pg-rows")
    with gr.Row():
        btn_greedy = gr.Button("Step: greedy token", elem_id="pg-step-greedy", variant="primary")
        btn_sample = gr.Button("Step: sampled token", elem_id="pg-step-sample")
        btn_gen = gr.Button("Generate", elem_id="pg-generate")
        btn_reset = gr.Button("Reset", elem_id="pg-reset")
        seed = gr.Number(0, label="seed", precision=0, minimum=0)
        max_new = gr.Number(32, label="max new tokens", precision=0, minimum=1, maximum=256)
    gr.Markdown("**Next token**")
    nxt = gr.HTML(elem_id="pg-next")
    gr.Markdown("**Compare**: the same context in the second checkpoint")
    cmp = gr.HTML(elem_id="pg-compare")
    with gr.Accordion("Embeddings: a token is a vector", open=False):
        token = gr.Textbox(label="Token (its text, e.g. ' park', or its id; empty = the last token)",
                           elem_id="pg-token")
        emb_btn = gr.Button("Nearest tokens", elem_id="pg-neighbours")
        emb = gr.HTML(elem_id="pg-embeddings")
    with gr.Accordion("Loss: -log p of a continuation", open=False):
        cont = gr.Textbox(label="Continuation (empty = the tokens appended above)", elem_id="pg-continuation")
        loss_btn = gr.Button("Score", elem_id="pg-score")
        loss = gr.HTML(elem_id="pg-loss")

    view = [name, other, chat, text, gen, temperature, top_k, top_p, rows]
    shown = [tokens, nxt, cmp]
    fresh = [name, other, chat, text, temperature, top_k, top_p, rows]
    for control in (other, temperature, top_k, top_p, rows):
        control.change(guarded(panels), view, shown, trigger_mode="always_last",
                       api_name="playground_redraw" if control is temperature else False)
    # a new context, checkpoint or template starts the appended tokens afresh
    text.input(guarded(reset), fresh, [gen, *shown], api_name=False, trigger_mode="always_last")
    for control in (name, chat):
        control.change(guarded(reset), fresh, [gen, *shown], api_name=False)
    btn_reset.click(guarded(reset), fresh, [gen, *shown], api_name="playground_reset")
    btn_greedy.click(guarded(step_greedy), [*view, seed], [gen, *shown], api_name="playground_step_greedy")
    btn_sample.click(guarded(step_sample), [*view, seed], [gen, *shown], api_name="playground_step_sample")
    btn_gen.click(guarded(continue_), [*view, seed, max_new], [gen, *shown], api_name="playground_generate")
    emb_btn.click(guarded(neighbours), [name, chat, text, gen, token], emb, api_name="playground_neighbours")
    loss_btn.click(guarded(score), [name, chat, text, gen, cont], loss, api_name="playground_loss")
    tab.select(guarded(panels), view, shown, api_name=False)
