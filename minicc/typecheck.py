"""Check plain JSON/YAML values against dataclass field types, with messages a person can act on.

The params loader, the JSONL reader and the probe and constitution loaders use this, so a wrong
type is reported the same way wherever it comes from.
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
    if dataclasses.is_dataclass(hint):
        return "a mapping of keys to values"
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


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a hint asks for, alone or in a union with None (a nested section)."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    found = [o for o in options if dataclasses.is_dataclass(o) and isinstance(o, type)]
    return found[0] if len(found) == 1 else None


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


def _value(value: Any, hint: Any, where: str, key_path: str, key: str) -> Any:
    """One checked field value: a nested mapping becomes its dataclass, a float stays a float."""
    section = _dataclass_in(hint)
    if section is not None and isinstance(value, dict):
        return build(section, value, where, _join(key_path, key))
    if get_origin(hint) is dict and isinstance(value, dict):
        key_hint, item_hint = get_args(hint)
        if _dataclass_in(item_hint) is not None:
            inner = _join(key_path, key)
            for name in value:
                if not matches(name, key_hint):
                    at = f"{where}: {inner}" if inner else where
                    raise ValueError(f"{at}: key {name!r} must be {describe(key_hint)}")
            return {
                name: _value(item, item_hint, where, inner, name) for name, item in value.items()
            }
    if not matches(value, hint):
        at = f"{where}: {key_path}" if key_path else where
        raise ValueError(f"{at}: key {key!r} must be {describe(hint)}, got {value!r}")
    return float(value) if hint is float else value


def build(cls: type, data: dict[str, Any], where: str, key_path: str = "") -> Any:
    """Construct dataclass `cls` from `data`, rejecting unknown, missing and mistyped keys.

    A field typed as a dataclass (or a mapping of names to one) is built the same way from its
    nested mapping, so a mistake at any depth is found. Every message starts with `where` (a file,
    a file and line) and the dotted path of the mapping that holds the key (`prompts.train`), so
    the user can find the offending value. Raises ValueError (a failed `__post_init__` check too,
    prefixed with `where`); callers wrap it in their own error type.
    """
    at = f"{where}: {key_path}" if key_path else where
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{at}: unknown key {unknown[0]!r}; allowed keys: {', '.join(fields)}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise ValueError(f"{at}: missing key {missing[0]!r}")
    values = {name: _value(data[name], hints[name], where, key_path, name) for name in fields}
    try:
        return cls(**values)
    except ValueError as error:
        # A range check in __post_init__ names its own dotted key; add the file.
        raise ValueError(f"{where}: {error}") from None
