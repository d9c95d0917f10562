"""Console tests never touch the real user's config or data dir."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    config = tmp_path / "config"
    data = tmp_path / "data"
    config.mkdir()
    monkeypatch.setenv("KERUB_TUI_CONFIG", str(config))
    monkeypatch.setenv("KERUB_TUI_DATA", str(data))
    return config, data
