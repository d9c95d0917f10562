"""The text on a guest's screen, read by tesseract where this machine has it (Debian: tesseract-ocr).

Half blocks show a screen's layout but not its words at terminal sizes: a 720x400 text screen is 80
characters of 9x16 pixels, about one terminal cell each. Where tesseract is installed, the VM detail
also says what the screen reads ("No bootable device", a kernel panic, "NAME login:"). The picture is
doubled first (tesseract reads the small VGA font better so), and given on stdin: nothing is written
to disk. Without tesseract, :func:`read_text` answers None and nothing is said.
"""

from __future__ import annotations

import shutil
import subprocess

from .picture import Picture

TIMEOUT = 60.0


def available() -> bool:
    return shutil.which("tesseract") is not None


def read_text(picture: Picture) -> str | None:
    """The lines of text tesseract reads on ``picture`` (blank ones dropped), or None without tesseract
    or when it fails (a missing language, a timeout): the screen is still shown."""
    binary = shutil.which("tesseract")
    if binary is None:
        return None
    big = picture.doubled() if picture.width * picture.height <= 1024 * 768 else picture
    try:
        done = subprocess.run([binary, "stdin", "stdout"], input=big.png(level=1), capture_output=True, timeout=TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    text = done.stdout.decode(errors="replace")
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


__all__ = ["available", "read_text"]
