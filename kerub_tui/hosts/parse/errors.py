"""The one exception every host-output parser raises, and the helpers that keep it the only one."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

# Printed by a discovery command whose tool is not installed (see facts.py): a fact, not an error.
MISSING_MARKER = "kerub-tui: missing tool:"

F = TypeVar("F", bound=Callable[..., Any])

_INT_RE = re.compile(r"\s*-?[0-9]{1,30}\s*\Z")
_FLOAT_RE = re.compile(r"\s*-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?\s*\Z")


class ParseError(ValueError):
    """Output of ``command`` that cannot be understood. Nothing of it is returned half-parsed."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.command, self.message))


def guarded(command: str) -> Callable[[F], F]:
    """Turn the exceptions garbage input provokes inside a parser into a ParseError naming ``command``.

    Parsers check their input explicitly and raise ParseError with a clear message; this is the
    backstop for shapes nobody foresaw (a list where a dict was expected, a number too large for
    float, JSON nested deep enough to exhaust the recursion limit, a model that refuses a value).
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def parse(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except ParseError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
                raise ParseError(command, f"unexpected output ({type(exc).__name__}: {exc})") from exc

        return parse  # type: ignore[return-value]

    return wrap


def require_text(text: object, command: str) -> str:
    if not isinstance(text, str):
        raise ParseError(command, f"expected text, got {type(text).__name__}")
    if "\0" in text:
        raise ParseError(command, "output contains a NUL byte")
    return text


def missing_tool(text: str) -> str | None:
    """The tool named by a missing-tool marker line, if ``text`` is one."""
    stripped = text.strip()
    if stripped.startswith(MISSING_MARKER) and "\n" not in stripped:
        return stripped[len(MISSING_MARKER) :].strip() or "?"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_json(text: object, command: str) -> dict[str, Any]:
    """Decode one JSON object; NaN/Infinity are refused (no command we read prints them)."""
    text = require_text(text, command)
    if not text.strip():
        raise ParseError(command, "empty output")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ParseError(command, "JSON nested too deeply") from exc
    except ValueError as exc:
        raise ParseError(command, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ParseError(command, f"expected a JSON object, got {type(data).__name__}")
    return data


def to_int(value: object, what: str, command: str, *, minimum: int = 0, maximum: int = 1 << 80) -> int:
    """An integer from JSON (number or decimal string); booleans, fractions and out-of-range refused."""
    if isinstance(value, bool):
        raise ParseError(command, f"{what} is {value!r}, not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT_RE.match(value):
        number = int(value)
    else:
        raise ParseError(command, f"{what} is {value!r}, not a whole number")
    if not minimum <= number <= maximum:
        raise ParseError(command, f"{what} {number} is out of range ({minimum}..{maximum})")
    return number


def to_float(value: object, what: str, command: str, *, minimum: float = 0.0, maximum: float = 1e12) -> float:
    if isinstance(value, bool):
        raise ParseError(command, f"{what} is {value!r}, not a number")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _FLOAT_RE.match(value)):
        number = float(value)
    else:
        raise ParseError(command, f"{what} is {value!r}, not a number")
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ParseError(command, f"{what} {value!r} is out of range ({minimum:g}..{maximum:g})")
    return number


def optional_str(value: object, what: str, command: str) -> str | None:
    """A JSON string that may be null or blank; blank means unknown."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(command, f"{what} is {value!r}, not text")
    value = value.strip()
    return value or None
