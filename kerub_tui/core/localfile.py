"""Files the admin names on the machine kerub-tui runs on (an ssh public key, cloud-init user data or
network config): read here, by the console's form or the command line, before their content goes into
a document. Pure local file I/O: nothing here reaches a host."""

from __future__ import annotations

FILE_MAX = 64 * 1024  # a key, user data or network config file read on the jump box


def read_local_text(path: str, what: str) -> str:
    """A file the admin named on the jump box (a key, user data), as text; ValueError with one line
    saying why not. Its content is never echoed: user data may hold secrets."""
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as error:
        raise ValueError(f"{what} {path}: {error.strerror or error}") from None
    if len(data) > FILE_MAX:
        raise ValueError(f"{what} {path} is larger than {FILE_MAX // 1024} KiB")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None
