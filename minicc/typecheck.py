"""Check plain JSON/YAML values against dataclass field types, with messages a person can act on.

Both the params loader and the JSONL reader use this, so a wrong type is reported the same way
wherever it comes from.
"""

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


def describe(hint: Any) -> str:
    """A short human name for a type hint: `str`, `one of 'a', 'b'`, `list of float`."""
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {describe(get_args(hint)[0])}"
    if origin is dict:
        key, value = get_args(hint)
        return f"a mapping of {describe(key)} to {describe(value)}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def matches(value: Any, hint: Any) -> bool:
    """Whether a decoded JSON/YAML value fits a type hint (an int is accepted for a float)."""
    origin = get_origin(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in get_args(hint))
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            matches(k, key) and matches(v, item) for k, v in value.items()
        )
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)


def build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Construct dataclass `cls` from `data`, rejecting unknown, missing and mistyped keys.

    `where` prefixes every message (a file and line, or a params section) so the user can find
    the offending value. Raises ValueError; callers wrap it in their own error type.
    """
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(fields)}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    for name in fields:
        if not matches(data[name], hints[name]):
            raise ValueError(
                f"{where}: key {name!r} must be {describe(hints[name])}, got {data[name]!r}"
            )
    kwargs = {name: float(data[name]) if hints[name] is float else data[name] for name in fields}
    return cls(**kwargs)
