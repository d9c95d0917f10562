"""Where kerub-tui keeps things: the data dir (store, keys, socket) and the config dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "kerub-tui"
DATA_ENV = "KERUB_TUI_DATA"
CONFIG_ENV = "KERUB_TUI_CONFIG"

STORE_FILE = "kerub.unqlite"
LOCK_FILE = "kerub.lock"
SOCKET_FILE = "control.sock"
KEY_FILE = "id_ed25519"
DEMO_DIR = "demo"


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: --data-dir, else $KERUB_TUI_DATA, else the platform's user data dir."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def demo_data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The demo's data dir: --data-dir, else a "demo" dir inside the data dir, so a demo never
    mixes its simulated fleet into the admin's documents."""
    if override:
        return Path(override).expanduser().resolve()
    return data_dir() / DEMO_DIR


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: it holds keys and host secrets."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
