"""The small parsers every edge shares: one of each, so every input accepts the same words.

Each raises ValueError (or BadRequest for query-string lists) with what it expected; the
caller names the setting, field or knob in its own error.
"""

from __future__ import annotations

from typing import Callable, Iterable

from server.errors import BadRequest

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0 (any case); ValueError for anything else."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text[:40]!r}")


def is_int(value: object) -> bool:
    """An integer from JSON, and not a boolean (which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def like_escape(text: str) -> str:
    """Text matched literally by `LIKE ... ESCAPE '\\'` (its %, _ and \\ escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_status_list(raw: str | None, valid: Iterable[str], field: str = "status",
                      case: Callable[[str], str] = str.upper) -> tuple[str, ...]:
    """A comma-separated list of statuses (any case: `case` gives the one of `valid`, repeats
    dropped); 400 naming `field` and the valid values for an unknown one. Empty for no value."""
    if raw is None:
        return ()
    valid = list(valid)
    values = tuple(dict.fromkeys(case(part.strip()) for part in raw.split(",") if part.strip()))
    unknown = [value for value in values if value not in valid]
    if unknown:
        raise BadRequest(f"Unknown {field} {unknown[0][:40]!r}; valid: " + ", ".join(valid),
                         code="validation_error", details={"field": field, "valid": valid})
    return values
