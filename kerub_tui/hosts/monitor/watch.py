"""Stream watching: the remote loop that prints a host's state sections only when they change, and its parser."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

_MARK = "@@kerub:"


def watch_command(sections: Mapping[str, str], interval: int, every: Mapping[str, int] | None = None) -> str:
    """A remote loop running each section's command every ``interval`` seconds and printing the
    whole batch (framed by markers, with exit statuses) only when it differs from the last one.

    ``every[name] = k`` runs that section only every k-th round (SMART: every few minutes); its
    last output stands in between.
    """
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 86400:
        raise ValueError(f"watch interval must be 1..86400 seconds, not {interval!r}")
    if not sections:
        raise ValueError("a watch needs at least one section")
    every = every or {}
    slow, parts = [], []
    for name, command in sections.items():
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ValueError(f"section name {name!r} must be letters, digits and '_'")
        section = f"echo {shlex.quote(_MARK + 'section ' + name)}; ( {command} ) 2>/dev/null; echo \"{_MARK}status $?\""
        rounds = every.get(name, 1)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"section {name}: every must be a positive whole number of rounds")
        if rounds == 1:
            parts.append(section)
        else:
            slow.append(f"if [ $((n % {rounds})) -eq 0 ]; then s_{name}=$({section}); fi; ")
            parts.append(f"printf '%s\\n' \"$s_{name}\"")
    batch = "; ".join(parts)
    return (
        f"n=0; prev=; while :; do {''.join(slow)}cur=$({batch}); "
        f"if [ \"$cur\" != \"$prev\" ]; then printf '%s\\n{_MARK}end\\n' \"$cur\"; prev=$cur; fi; "
        f"n=$((n + 1)); sleep {interval}; done"
    )


@dataclass(frozen=True)
class SectionOutput:
    exit_code: int | None
    stdout: str
    stderr: str = ""


class WatchParser:
    """Feed it the watch's lines; it returns {section: SectionOutput} at the end of each batch."""

    def __init__(self) -> None:
        self._sections: dict[str, list[str]] = {}
        self._status: dict[str, int | None] = {}
        self._current: str | None = None

    def feed(self, line: str) -> dict[str, SectionOutput] | None:
        if line.startswith(_MARK):
            word, _, rest = line[len(_MARK):].partition(" ")
            if word == "section":
                self._current = rest.strip()
                self._sections[self._current] = []
                self._status[self._current] = None
            elif word == "status" and self._current is not None:
                self._status[self._current] = int(rest) if rest.strip().isdigit() else None
                self._current = None
            elif word == "end":
                batch = {
                    name: SectionOutput(self._status.get(name), "".join(line + "\n" for line in lines))
                    for name, lines in self._sections.items()
                }
                self._sections, self._status, self._current = {}, {}, None
                return batch
            return None
        if self._current is not None:
            lines = self._sections[self._current]
            if len(lines) < 100_000:
                lines.append(line)
        return None
