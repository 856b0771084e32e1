"""Loading rows from jsonl / parquet / txt files, or from the Hugging Face hub (`hf:owner/name[:config]`).

Hub sources are spelled with an explicit `hf:` prefix so that a mistyped local path never turns into
a network request; GPU configs use them, tests and the tiny default never do.
Problems are `UserError`s naming the file (and the line, for jsonl).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.config import UserError


def load_rows(source: str | Path, split: str = "train") -> list[dict]:
    source = str(source)
    if source.startswith("hf:"):
        return _load_hub(source[3:], split)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: file not found (check the path, or run the stage that writes it)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        with path.open() as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    if suffix == ".txt":
        # Paragraphs (blank-line separated) become documents.
        return [{"text": p.strip()} for p in path.read_text().split("\n\n") if p.strip()]
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .parquet, .txt or hf:<dataset>")


def _load_hub(name: str, split: str) -> list[dict]:
    """`owner/name[:config][@split]`, e.g. `HuggingFaceH4/ultrafeedback_binarized@train_prefs` or
    `HuggingFaceFW/fineweb-edu:sample-10BT@train[:1%]` (datasets' slice syntax)."""
    import datasets
    name, _, split_given = name.partition("@")
    split = split_given or split
    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:  # the hub raises many types; the user needs the name and the reason
        raise UserError(f"hf:{name}: could not load split {split!r} ({type(e).__name__}: {e})") from None
    return list(ds)


def load_texts(source: str | Path, field: str = "text") -> list[str]:
    """Documents of a corpus. Fails on a missing field or an empty corpus."""
    rows = load_rows(source)
    texts = []
    for i, row in enumerate(rows, 1):
        value = row.get(field)
        if not isinstance(value, str):
            raise UserError(f"{source}: row {i} has no string field {field!r} (corpus rows look like {{\"text\": \"...\"}})")
        if value.strip():
            texts.append(value)
    if not texts:
        raise UserError(f"{source}: corpus is empty (no non-empty {field!r} rows)")
    return texts


# ---------------------------------------------------------------- chat rows (SFT demonstrations, corrections)

def chat_row_problem(row: dict) -> tuple[str, str] | None:
    """(kind, explanation) of why `row` is not a valid chat demonstration, or None.

    Valid: {"messages": [optional system, then user/assistant alternating, ending with assistant]},
    every content a non-empty string.
    """
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "no messages", ("no 'messages' list (rows look like {\"messages\": [{\"role\": \"user\", "
                               "\"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]})")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return "bad message", f"message {j} must be an object with string 'role' and 'content'"
    roles = [m["role"] for m in msgs]
    turns = roles[1:] if roles[0] == "system" else roles
    if not turns or turns != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
        return "role order", (f"wrong role order {roles}; expected an optional system message, then user and "
                              "assistant alternating, ending with assistant")
    for j, m in enumerate(msgs):
        if not m["content"].strip():
            return "empty turn", f"message {j} ({m['role']}) is empty"
    return None


def check_chat_rows(rows: list[dict], where: str, tokenizer, max_length: int, skip_bad: bool) -> tuple[list[dict], dict]:
    """Keep the valid chat rows that fit in `max_length` tokens.

    A bad row is a `UserError` naming it, or, with `skip_bad`, is dropped and counted by kind.
    Returns (rows reduced to their "messages", {kind: count}).
    """
    good, skipped = [], {}
    for i, row in enumerate(rows, 1):
        problem = chat_row_problem(row)
        if problem is None:
            n = len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
            if n > max_length:
                problem = "too long", f"{n} tokens is longer than the context (max_length={max_length}); shorten it"
        if problem is None:
            good.append({"messages": row["messages"]})
            continue
        if not skip_bad:
            raise UserError(f"{where}: row {i}: {problem[1]} (or set data.skip_bad_rows=true to skip such rows)")
        skipped[problem[0]] = skipped.get(problem[0], 0) + 1
    if not good:
        raise UserError(f"{where}: no valid chat rows ({sum(skipped.values())} skipped: {skipped})")
    return good, skipped


# ---------------------------------------------------------------- preference pairs

def _as_messages(value, role: str):
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        return value
    return None


_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def transcript_messages(text: str, where: str, open_reply: bool = False) -> list[dict]:
    """An HH-RLHF transcript ("\n\nHuman: ...\n\nAssistant: ...") as role/content turns: user first,
    alternating, ending with the assistant. `open_reply`: a prompt, which ends with the user's turn or an
    empty "Assistant:" (dropped). Anything else is a `UserError` naming `where`."""
    parts = _SPEAKER.split(text)
    msgs = [{"role": _ROLE[who], "content": said.strip()} for who, said in zip(parts[1::2], parts[2::2])]
    if open_reply and msgs[-1] == {"role": "assistant", "content": ""}:
        msgs.pop()
    roles = [m["role"] for m in msgs]
    last = "user" if open_reply else "assistant"
    if roles[:1] != ["user"] or roles[-1] != last or any(x == y for x, y in zip(roles, roles[1:])):
        raise UserError(f"{where}: transcript turns go {' -> '.join(roles)}; expected Human and Assistant "
                        f"alternating, starting with Human and ending with {'Human' if open_reply else 'Assistant'}")
    return msgs


def _is_transcript(text) -> bool:
    """Text that opens with a "Human:" or "Assistant:" turn (leading blank lines allowed)."""
    return isinstance(text, str) and _SPEAKER.match(text) is not None


def split_conversations(chosen: list[dict], rejected: list[dict], where: str) -> tuple[list[dict], list[dict], list[dict]]:
    """Two whole conversations that share a beginning -> (prompt turns, chosen reply, rejected reply). They
    must differ only in their last turn, an assistant reply after a user turn; otherwise a `UserError`."""
    if not (chosen and rejected and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"):
        raise UserError(f"{where}: 'chosen' and 'rejected' must each end with an assistant reply")
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        turn = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
        raise UserError(f"{where}: 'chosen' and 'rejected' differ before their last reply (at turn {turn + 1}); "
                        "a pair must share every earlier turn")
    if not prompt or prompt[-1]["role"] != "user":
        raise UserError(f"{where}: the shared turns before the replies must end with a user turn")
    return prompt, chosen[-1:], rejected[-1:]


@dataclass
class PreferenceColumns:
    """Which columns of a preference dataset hold what (GPU configs map hub datasets with it).
    HH-RLHF: prompt "" (the transcripts' shared beginning is the prompt); UltraFeedback-binarized: prompt ""
    too (its chosen / rejected are whole conversations); the project's own export: the defaults."""
    prompt: str = "prompt"             # "" = no prompt column
    chosen: str = "chosen"
    rejected: str = "rejected"


def map_preference_columns(rows: list[dict], cols: PreferenceColumns, source) -> list[dict]:
    if (cols.prompt, cols.chosen, cols.rejected) == ("prompt", "chosen", "rejected"):
        return rows
    out = []
    for i, r in enumerate(rows, 1):
        missing = [c for c in (cols.prompt, cols.chosen, cols.rejected) if c and c not in r]
        if missing:
            raise UserError(f"{source}: row {i} has no column {missing[0]!r} (columns: {', '.join(sorted(r))}); "
                            "fix the config's columns.prompt / columns.chosen / columns.rejected")
        out.append({"chosen": r[cols.chosen], "rejected": r[cols.rejected], **({"prompt": r[cols.prompt]} if cols.prompt else {})})
    return out


def load_preferences(source: str | Path, columns: PreferenceColumns | None = None) -> list[dict]:
    """Preference rows in one form: TRL's explicit conversational {"prompt": [messages], "chosen": [assistant
    message], "rejected": [assistant message], ...other columns kept}.

    Also read: standard text (`"prompt": "...", "chosen": "...", "rejected": "..."`, wrapped as one user and
    one assistant turn) and implicit prompts (HH-RLHF style: `chosen` / `rejected` are whole transcripts,
    text or messages; the shared beginning becomes the prompt, in role/content turns). A prompt column that
    is a transcript ("\n\nHuman: ...\n\nAssistant:") becomes its turns too. Anything else, an empty or one-sided file
    (no `rejected` side), or a row whose chosen equals its rejected, is a `UserError` naming the row.
    """
    rows = map_preference_columns(load_rows(source), columns or PreferenceColumns(), source)
    if not rows:
        raise UserError(f"{source}: no preference rows; export labels first (make export)")
    if not any("rejected" in r for r in rows):
        raise UserError(f"{source}: one-sided preference file: no row has a 'rejected' side (columns: "
                        f"{', '.join(sorted(rows[0]))}); preference rows need 'chosen' and 'rejected'")
    out = []
    for i, row in enumerate(rows, 1):
        where = f"{source}: row {i}"
        if "chosen" not in row or "rejected" not in row:
            raise UserError(f"{where}: needs 'chosen' and 'rejected' (and optionally 'prompt'); has {sorted(row)}")
        if "prompt" in row:  # explicit prompt: the sides are the replies
            prompt = (transcript_messages(row["prompt"], f"{where} ('prompt')", open_reply=True)
                      if _is_transcript(row["prompt"]) else _as_messages(row["prompt"], "user"))
            chosen, rejected = _as_messages(row["chosen"], "assistant"), _as_messages(row["rejected"], "assistant")
        else:  # implicit prompt: the sides are whole conversations sharing their beginning
            sides = [transcript_messages(row[k], f"{where} ('{k}')") if _is_transcript(row[k]) else row[k]
                     for k in ("chosen", "rejected")]
            if not all(_as_messages(x, "assistant") and isinstance(x, list) for x in sides):
                raise UserError(f"{where}: no 'prompt', so 'chosen' and 'rejected' must be whole conversations "
                                "(HH-style transcripts or lists of {role, content} messages); or add a 'prompt' column")
            prompt, chosen, rejected = split_conversations(*sides, where)
        if prompt is None or chosen is None or rejected is None:
            raise UserError(f"{where}: 'prompt', 'chosen' and 'rejected' must be text or lists of "
                            "{role, content} messages")
        texts = ["".join(m["content"] for m in x).strip() for x in (chosen, rejected)]
        if not texts[0]:  # an empty rejected response is a real failure worth learning from; an empty chosen is not
            raise UserError(f"{where}: the 'chosen' response is empty")
        if texts[0] == texts[1]:
            raise UserError(f"{where}: 'chosen' equals 'rejected' ({texts[0][:60]!r}); such a pair teaches nothing, "
                            "drop it")
        out.append({**row, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


# ---------------------------------------------------------------- prompt sets (labeling, PPO / RLOO rollouts)

@dataclass
class PromptSource:
    """Which columns of a prompt set hold what. The world's rows and the defaults agree; UltraFeedback:
    prompt "prompt", id "prompt_id"; AlpacaEval: prompt "instruction", id ""."""
    prompt: str = "messages"           # text (one user turn), an HH transcript, or chat messages (a trailing reply is dropped)
    id: str = "id"                     # "" = derived from the prompt's turns
    skip_too_long: bool = False        # drop prompts that leave no room to answer in the context (else an error)


def _prompt_turns(value, where: str) -> list[dict] | None:
    if _is_transcript(value):
        return transcript_messages(value, where, open_reply=True)
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else None
    msgs = _as_messages(value, "user") if isinstance(value, list) else None
    while msgs and msgs[-1]["role"] == "assistant":  # a chat dataset's row carries its own reply
        msgs = msgs[:-1]
    return msgs if msgs and msgs[-1]["role"] == "user" and msgs[-1]["content"].strip() else None


def load_prompts(source: str | Path, columns: PromptSource | None = None, knob: str = "prompts") -> list[dict]:
    """Prompt rows {"id": str, "messages": [..., user turn], ...the row's other columns} from the world's
    splits, a jsonl / parquet file or a hub dataset. Rows sharing an id and turns count once; a missing
    column, an unusable prompt, one id for two prompts or an empty set is a `UserError` naming the row and
    the `knob` section of the stage's config that maps the columns."""
    import hashlib

    c = columns or PromptSource()
    out: dict[str, dict] = {}
    for i, row in enumerate(load_rows(source), 1):
        where = f"{source}: row {i}"
        for col in (c.prompt, c.id):
            if col and col not in row:
                raise UserError(f"{where} has no column {col!r} (columns: {', '.join(sorted(row))}); set "
                                f"{knob}.prompt / {knob}.id in the config to the columns holding the prompt and its id")
        msgs = _prompt_turns(row[c.prompt], where)
        if msgs is None:
            raise UserError(f"{where}: column {c.prompt!r} holds no prompt (text, or chat messages ending "
                            "with a non-empty user turn)")
        pid = row[c.id] if c.id else hashlib.sha256(json.dumps(msgs, sort_keys=True).encode()).hexdigest()[:16]
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
            raise UserError(f"{where}: id column {c.id!r} must hold a non-empty string or integer, got {pid!r}")
        pid = str(pid)
        if pid in out and out[pid]["messages"] != msgs:
            raise UserError(f"{where}: id {pid!r} already names another prompt; ids must be unique "
                            f"(or set {knob}.id: \"\" to derive them from the prompts)")
        out.setdefault(pid, {**row, "id": pid, "messages": msgs})
    if not out:
        raise UserError(f"{source}: the prompt set is empty")
    return list(out.values())


def fit_prompts(rows: list[dict], tokenizer, limit: int, room: int, columns: PromptSource, where,
                knob: str = "prompts") -> list[dict]:
    """The prompts that leave `room` tokens to answer in a `limit`-token context (the model's
    max_position_embeddings); a longer one is a `UserError` (or, with `skip_too_long`, dropped and counted
    in a printed line)."""
    kept = []
    for i, r in enumerate(rows, 1):
        n = len(tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])
        if n + room <= limit:
            kept.append(r)
        elif not columns.skip_too_long:
            raise UserError(f"{where}: prompt {r['id']!r} (row {i}) is {n} tokens; with {room} to answer it does "
                            f"not fit the {limit}-token context; shorten it or set {knob}.skip_too_long: true")
    if len(kept) < len(rows):
        print(f"{where}: skipped {len(rows) - len(kept)} prompts too long for the {limit}-token context")
    if not kept:
        raise UserError(f"{where}: no prompt fits the {limit}-token context with {room} tokens to answer")
    return kept
