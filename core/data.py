"""Loading rows from jsonl / parquet / txt files, or from the Hugging Face hub (`hf:owner/name[:config]`).

Hub sources are spelled with an explicit `hf:` prefix so that a mistyped local path never turns into
a network request; GPU configs use them, tests and the tiny default never do.
Problems are `UserError`s naming the file (and the line, for jsonl).
"""

from __future__ import annotations

import json
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
    import datasets
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
