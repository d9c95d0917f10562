"""A pydantic ValidationError as one line in the admin's words: which field, what is wrong with it.

pydantic's own text is four lines per problem (a header naming the model's internals, the location,
the message with its error type and input, a link). An admin importing an export or reading a
refusal needs "memory_min must be at least 16 MiB, not 5" instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

# Location parts that only say which class of a tagged union was tried (a document kind, an
# expectation type) or which validator ran: not fields the admin wrote.
_WRAPPERS = ("function-after", "function-before", "function-wrap", "function-plain")


def _value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"a {'list' if not isinstance(value, dict) else 'mapping'}"
    if isinstance(value, str) and value.strip() and len(value) <= 40:
        try:
            float(value)
        except ValueError:
            pass
        else:
            return value.strip()  # a number typed in a field: as typed, not as a Python string
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bound(limit: Any) -> str:
    return f"{limit:g}" if isinstance(limit, float) else str(limit)


def _bytes_hint(limit: Any) -> str:
    if isinstance(limit, int) and limit >= 1 << 20 and limit % (1 << 20) == 0:
        mib = limit >> 20
        return f" ({mib >> 10} GiB)" if mib % 1024 == 0 else f" ({mib} MiB)"
    return ""


def reason(item: Mapping[str, Any]) -> str:
    """What is wrong with one field, from one item of ``ValidationError.errors()``: 'must be at most 1, not 2'."""
    kind = item.get("type", "")
    ctx = item.get("ctx") or {}
    given = item.get("input")
    shown = f", not {_value(given)}" if "input" in item and not isinstance(given, (dict, list)) else ""
    if kind == "missing":
        return "is missing"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{shown}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{shown}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{shown}"
    if kind in ("string_type", "str_type"):
        return f"must be text{shown}"
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping of fields"
    if kind == "greater_than_equal":
        return f"must be at least {_bound(ctx.get('ge'))}{_bytes_hint(ctx.get('ge'))}{shown}"
    if kind == "greater_than":
        return f"must be more than {_bound(ctx.get('gt'))}{shown}"
    if kind == "less_than_equal":
        return f"must be at most {_bound(ctx.get('le'))}{_bytes_hint(ctx.get('le'))}{shown}"
    if kind == "less_than":
        return f"must be less than {_bound(ctx.get('lt'))}{shown}"
    if kind == "string_too_short":
        return (
            "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} characters"
        )
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "string_pattern_mismatch":
        return f"{_value(given)} has characters that are not allowed here"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}{shown}"
    if kind in ("datetime_parsing", "datetime_type", "datetime_from_date_parsing"):
        return f"must be a date and time such as 2024-05-01T12:00:00Z{shown}"
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "type")).strip("'")
        return f"{field} {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"has no {str(ctx.get('discriminator', 'type')).strip(chr(39))}"
    message = str(item.get("msg", "is not valid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _where(loc: tuple[Any, ...], tags: frozenset[str]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in _WRAPPERS or str(part).startswith(_WRAPPERS) or part in tags:
            continue
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def describe(error: ValidationError, tags: frozenset[str] | set[str] = frozenset()) -> str:
    """One line for ``error``: its first problem as 'FIELD REASON' (and how many more there are).

    ``tags`` are the tag values of the tagged unions involved (document kinds, expectation types):
    they appear in pydantic's locations but are not fields."""
    items = error.errors()
    if not items:
        return "is not valid"
    item = items[0]
    where = _where(tuple(item.get("loc", ())), frozenset(tags))
    why = reason(item)
    # A validator of ours already names its field ("VM name 'a b' contains a space"): say it once.
    named = item.get("type") == "value_error" and where.rsplit(".", 1)[-1].replace("_", " ") in why
    line = why if not where or named else f"{where} {why}"
    more = len(items) - 1
    if more:
        line += f" (and {more} more problem{'s' if more > 1 else ''})"
    return " ".join(line.split())
