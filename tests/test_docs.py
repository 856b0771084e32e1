"""The README and docs/ only name what exists: every `make` target, every repository path, every page link."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("configs/", "core/", "pretrain/", "sft/", "reward/", "rlhf/", "labeling_ui/", "bench/", "tools/", "tests/",
       "docs/", ".ci/")


def targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))


def test_the_front_page_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_a_page_names_exists(page):
    known = targets()
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", page.read_text()))
    named |= set(re.findall(r"^make ([a-z][a-z0-9-]*)", page.read_text(), re.M))  # inside code blocks
    assert not named - known, f"{page.name}: no such make target: {sorted(named - known)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_link_a_page_names_exists(page):
    text = page.read_text()
    paths = {m.rstrip(".,:;)") for m in re.findall(r"`([^`\s]+)`", text) if m.startswith(TOP)}
    paths = {p.split(":")[0] for p in paths if "<" not in p and "*" not in p and "{" not in p}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{page.name}: no such file or folder: {missing}"
    links = [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not m.startswith("http")]
    dead = sorted(link for link in links if not (page.parent / link).exists())
    assert not dead, f"{page.name}: dead links: {dead}"
