"""The test media cache (tests/lab/media.py): one build per recipe, results of other recipes kept while used.

Two checkouts at different recipe versions (a branch, a worktree) share the machine's cache; each must
find its own image instead of deleting the other's and having it rebuilt, in turns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.lab import media


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(media, "CACHE_DIR", tmp_path)
    return tmp_path


def recipe(version: str, builds: list[str]) -> media.Recipe:
    def build(work: Path, out: Path) -> None:
        builds.append(version)
        out.write_text(version)
    return media.Recipe("img", ".raw", f"img {version}", build)


def test_each_recipe_is_built_once_and_another_versions_result_in_use_stays(cache):
    builds: list[str] = []
    old, new = recipe("1", builds), recipe("2", builds)
    assert media.cached(old).read_text() == "1"
    assert media.cached(new).read_text() == "2"
    assert media.cached(old).read_text() == "1"  # the other checkout's image is still there
    assert media.cached(new).read_text() == "2"
    assert builds == ["1", "2"]


def test_a_result_unused_for_a_day_goes_at_the_next_build(cache):
    builds: list[str] = []
    old = media.cached(recipe("1", builds))
    day_ago = time.time() - media.UNUSED_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    media.cached(recipe("2", builds))
    assert not old.exists()
    assert builds == ["1", "2"]
