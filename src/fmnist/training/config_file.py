"""Read a settings file (YAML, TOML or JSON) in bounded memory and time.

A config file is a few dozen lines, so anything over ``MAX_CONFIG_BYTES`` is refused
before it is parsed, and only regular files are opened (a FIFO or /dev/zero would block or
never end). YAML aliases are refused: nested aliases ("billion laughs") expand a few
hundred bytes into gigabytes, and a settings file never needs them. Nesting deeper than
``MAX_CONFIG_DEPTH`` is refused too (the deepest real setting is two levels down), before
recursion in the parsers or later in JSON dumps can fail on it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from fmnist.data.input_files import open_regular_file
from fmnist.errors import ConfigError

MAX_CONFIG_BYTES = 256 * 1024
MAX_CONFIG_DEPTH = 16
CONFIG_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        line = f"line {mark.line + 1}: " if mark is not None else ""
        super().__init__(f"{line}{problem}")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data only, no object tags) without aliases, nesting
    bounded. The pure-Python loader, because the C one composes nodes out of reach of
    these checks; a file of at most MAX_CONFIG_BYTES parses in well under a second."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed in a config file", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise _Refused(f"nested deeper than {MAX_CONFIG_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _depth(values: object) -> int:
    """How deeply dicts and lists nest in ``values`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(values, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_CONFIG_DEPTH:
            stack.extend((child, level + 1) for child in children)
    return deepest


def _read_text(path: Path) -> str:
    with open_regular_file(path, ConfigError) as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: over {MAX_CONFIG_BYTES // 1024} KiB, too large for a config file",
            "is this the right file? A config holds a few settings",
        )
    return data.decode("utf-8", errors="replace")


def read_settings(path: Path) -> dict:
    """The mapping of settings in a .yaml/.yml/.json or .toml file (empty for an empty file)."""
    kind = CONFIG_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        if not path.exists():
            raise ConfigError(f"{path}: no such config file", "check the --config path")
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}", "use .yaml, .yml, .json or .toml")
    try:
        text = _read_text(path)
    except ConfigError as error:
        if error.problem == f"{path}: no such file":
            raise ConfigError(f"{path}: no such config file", "check the --config path") from None
        raise
    if kind == "json":  # strict JSON (YAML would accept a trailing comma as valid)
        from fmnist.bounded_json import JsonRefused, loads_bounded

        try:
            values = loads_bounded(text, max_chars=len(text) + 1, max_depth=MAX_CONFIG_DEPTH, finite=False)
        except (JsonRefused, ValueError) as error:
            first = str(error).splitlines()[0][:200]
            raise ConfigError(f"{path}: not valid JSON ({first})", "fix the syntax") from None
        return _checked_mapping(path, values)
    try:
        values = tomllib.loads(text) if kind == "toml" else yaml.load(text, Loader=_BoundedLoader)
    except _Refused as error:
        raise ConfigError(f"{path}: {error}", "write each value out in full") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{path}: cannot parse ({first})", "fix the syntax") from None
    except (ValueError, OverflowError) as error:  # e.g. an integer of more than 4,300 digits
        first = str(error).splitlines()[0][:200]
        raise ConfigError(f"{path}: cannot parse a value ({first})", "fix the value") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels", "fix the file") from None
    return _checked_mapping(path, values)


def _checked_mapping(path: Path, values: object) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(values).__name__}")
    if _depth(values) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels", "fix the file")
    bad_keys = _non_string_keys(values)
    if bad_keys:  # YAML allows `1: 2` and `null: 2`; settings are named
        raise ConfigError(f"{path}: {bad_keys[0]!r} is not a setting name", "name each setting (e.g. epochs: 10)")
    return values


def _non_string_keys(value: object) -> list[object]:
    """The mapping keys at any depth that are not strings (None, a number: YAML allows them)."""
    if isinstance(value, dict):
        return [key for key in value if not isinstance(key, str)] + [k for inner in value.values() for k in _non_string_keys(inner)]
    if isinstance(value, list):
        return [k for inner in value for k in _non_string_keys(inner)]
    return []


