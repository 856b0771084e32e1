"""Typed configs: YAML file + `key=value` overrides -> nested dataclasses. Unknown keys and wrong types fail.

Every stage describes its knobs as dataclasses (documented defaults). `load_config(Cls, path, overrides)`
reads the YAML, applies overrides such as `train.max_steps=10` (values parsed as YAML), checks every key
and type, and returns a `Cls`. Errors are `UserError`s naming the file and the field; `cli()` turns them
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import yaml


class UserError(Exception):
    """A problem the user can fix (bad input, bad config). Shown as one line, never a traceback."""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UserError as e:
                errors.append(str(e))
        raise errors[0] if len(errors) == 1 else UserError(f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where}: must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where}: must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: must be a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise UserError(f"{where}: must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise UserError(f"{prefix}{key}: unknown key (known keys here: {', '.join(fields)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if post:
        post()
    return obj


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"override {dotted}: {p} is not a section")
        tree = node
    tree[leaf] = value


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Read `path` (YAML), apply `a.b=value` overrides, and build a checked `cls`."""
    data: dict = {}
    label = "config"
    if path is not None:
        path = Path(path)
        label = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: top level must be a mapping of keys")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value, e.g. train.max_steps=10")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    try:
        return _build(cls, data, "")
    except UserError as e:
        raise UserError(f"{label}: {e}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def cli(main: Callable[..., Any], cfg_cls: type, paths: dict[str, str], doc: str | None = None,
        optional: tuple[str, ...] = ()) -> None:
    """Shared stage CLI: `--config X.yaml --<path> P ... [key=value ...]` -> main(cfg, **paths).

    `paths` maps argument names to their help text (names in `optional` may be left out); paths come
    from the Makefile, knobs from YAML.
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--config", required=True, help="YAML file of knobs")
    for name, help_text in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=name not in optional, help=help_text)
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=10")
    args = parser.parse_args()
    try:
        cfg = load_config(cfg_cls, args.config, args.overrides)
        main(cfg, **{k: getattr(args, k) for k in paths})
        code = 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except BaseException as e:
        if not in_process_group():
            raise
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
        if not isinstance(e, SystemExit):
            traceback.print_exc()
    if in_process_group():
        # One rank of a distributed run ends without interpreter shutdown. DDP keeps the gloo group alive
        # past destroy_process_group, and a gloo worker thread may still drop the last reference to a tensor
        # of the final collective; if the interpreter is finalizing by then, that thread dies taking the
        # GIL and the process aborts ("terminate called without an active exception", SIGABRT), which
        # the launcher reports as a failed run. Artifacts are written and closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


def settings_copy(src: str | Path, dst: str | Path) -> bool:
    """Write a config's settings (the parsed YAML, keys sorted) to `dst`, unless `dst` already holds them.

    The Makefile's stages depend on this copy instead of the YAML file, so a changed setting reruns a stage and
    a changed comment or layout does not. A first copy takes the config's own time, so that adding it reruns
    nothing. A file that does not parse is copied as text: the stage that reads it names the error.
    Returns whether `dst` was written.
    """
    src, dst = Path(src), Path(dst)
    text = src.read_text()
    try:
        text = json.dumps(yaml.safe_load(text), sort_keys=True, indent=1, default=str) + "\n"
    except yaml.YAMLError:
        pass
    if dst.is_file() and dst.read_text() == text:
        return False
    first = not dst.exists()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    if first:
        os.utime(dst, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    return True


def in_process_group() -> bool:
    """Whether this process is one rank of a torch.distributed run (no torch imported: no group)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


if __name__ == "__main__":   # the Makefile: python -m core.config CONFIG.yaml SETTINGS.json
    settings_copy(*sys.argv[1:3])
