"""Strict YAML reading for params and constitution files: one-line errors with file and line."""

from pathlib import Path
from typing import Any

import yaml

from minicc.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key repeated in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """Parse a UTF-8 YAML file (a byte-order mark is accepted), rejecting duplicate keys."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not valid UTF-8 (byte {error.start}); save the file as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(str(error.problem or "syntax error").split())
        if error.context and error.context_mark:
            # PyYAML notices an unclosed bracket lines later: name where it was opened too.
            problem = f"{error.context} from line {error.context_mark.line + 1}: {problem}"
        if mark is None:
            raise UserError(f"{path}: invalid YAML ({problem})") from None
        line = mark.line + 1
        raise UserError(f"{path}:{line}: invalid YAML at line {line} ({problem})") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: invalid YAML ({' '.join(str(error).split())})") from None
