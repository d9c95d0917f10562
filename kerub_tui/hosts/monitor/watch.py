"""Stream watching: the remote loop that prints a host's state sections only when they change, and its parser."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping
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
    truncated: bool = False  # more than the parser keeps was printed: the rest was dropped


class _Section:
    """One section's text as it arrives: joined in blocks, so a million short lines cost their
    characters, not a million string objects."""

    __slots__ = ("blocks", "count", "lines", "size", "truncated")

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.lines: list[str] = []
        self.size = 0
        self.count = 0
        self.truncated = False

    def add(self, line: str, size: int, max_lines: int, max_size: int | None) -> None:
        if self.truncated:
            return
        if self.count >= max_lines or (max_size is not None and self.size + size > max_size):
            self.truncated = True
            return
        self.lines.append(line)
        self.size += size
        self.count += 1
        if len(self.lines) >= 1024:
            self.blocks.append("".join(line + "\n" for line in self.lines))
            self.lines.clear()

    def text(self) -> str:
        return "".join(self.blocks) + "".join(line + "\n" for line in self.lines)


class WatchParser:
    """Feed it the watch's lines; it returns {section: SectionOutput} at the end of each batch.

    ``mark`` starts every marker line: discovery's one-shot batch (hosts/batch.py) uses a random one
    per run, which no output of the host can print. ``names``: the only sections taken (a marker
    naming another starts no section, and what follows it is dropped). Each section keeps at most
    ``max_lines`` lines and ``max_size`` units (a line counts ``size``, by default its characters
    and its newline); beyond that its text is cut and flagged ``truncated``.
    """

    def __init__(self, mark: str = _MARK, *, names: Collection[str] | None = None, max_lines: int = 100_000,
                 max_size: int | None = None) -> None:
        self.mark = mark
        self.names = frozenset(names) if names is not None else None
        self.max_lines = max_lines
        self.max_size = max_size
        self._sections: dict[str, _Section] = {}
        self._status: dict[str, int | None] = {}
        self._current: str | None = None

    def feed(self, line: str, size: int | None = None) -> dict[str, SectionOutput] | None:
        if line.startswith(self.mark):
            word, _, rest = line[len(self.mark):].partition(" ")
            if word == "section":
                name = rest.strip()
                if self.names is not None and name not in self.names:
                    self._current = None
                    return None
                self._current = name
                self._sections[name] = _Section()
                self._status[name] = None
            elif word == "status" and self._current is not None:
                self._status[self._current] = int(rest) if rest.strip().isdigit() else None
                self._current = None
            elif word == "end":
                batch = self.sections()
                self._sections, self._status, self._current = {}, {}, None
                return batch
            return None
        if self._current is not None:
            self._sections[self._current].add(line, len(line) + 1 if size is None else size, self.max_lines,
                                              self.max_size)
        return None

    def cut(self) -> None:
        """Part of the line being read was dropped (too long to hold): the current section is incomplete."""
        if self._current is not None:
            self._sections[self._current].truncated = True

    def sections(self) -> dict[str, SectionOutput]:
        """The batch so far (a batch cut short: the section being read has no status)."""
        return {
            name: SectionOutput(self._status.get(name), section.text(), truncated=section.truncated)
            for name, section in self._sections.items()
        }
