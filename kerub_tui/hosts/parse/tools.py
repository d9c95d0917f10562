"""Which host tools are installed, from one ``command -v`` loop printing ``NAME yes|no`` per tool."""

from __future__ import annotations

import re

from .errors import ParseError, guarded, require_text

COMMAND = "command -v"
_TOOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")


@guarded(COMMAND)
def parse_tools(text: str) -> dict[str, bool]:
    text = require_text(text, COMMAND)
    tools: dict[str, bool] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        words = line.split()
        if len(words) != 2 or not _TOOL_RE.match(words[0]) or words[1] not in ("yes", "no"):
            raise ParseError(COMMAND, f"line {line[:80]!r} is not 'TOOL yes|no'")
        if words[0] in tools:
            raise ParseError(COMMAND, f"tool {words[0]} is reported twice")
        tools[words[0]] = words[1] == "yes"
    if not tools:
        raise ParseError(COMMAND, "no tool reported")
    return tools
