"""Reading YAML with bounds, so a config cannot cost more than it says.

A YAML alias is a pointer: a few hundred bytes of nested aliases ("billion laughs")
construct billions of values. ``load_yaml`` composes the node graph first, where an alias
is still one shared node, measures with one memoized walk what the document expands to
(values, characters, depth), and constructs Python values only when that is within
bounds. It also refuses what PyYAML resolves silently: a key given twice in one mapping
(the later value used to win), bytes that are not UTF-8 text, and the YAML types a
config cannot carry (``!!binary`` bytes, which pydantic would turn into text past the
control-character check; ``!!set``, ``!!omap``, ``!!pairs``). A date or a timestamp is
read as the text written, as YAML 1.2 does. Every refusal is one short ``ConfigError``
naming the field or the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cloudtrain.errors import ConfigError, quote

#: The most a config file may hold; Prefect takes flow parameters under 512 KB anyway.
MAX_BYTES = 1024 * 1024
#: Nesting a config needs is 3 or 4 levels; PyYAML's composer recurses per level.
MAX_DEPTH = 32
MAX_ALIASES = 1_000
#: Values (scalars, lists, mappings) and scalar characters once aliases are expanded.
MAX_VALUES = 100_000
MAX_CHARS = 1024 * 1024

_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
#: YAML 1.1 types with no place in a config (JSON has none of them), by their tag.
_REFUSED_TAGS = {
    f"tag:yaml.org,2002:{name}": f"!!{name}" for name in ("binary", "set", "omap", "pairs")
}


def load_yaml(data: bytes | str, *, source: str, field: str = "") -> Any:
    """The one document in ``data``, constructed only when within bounds.

    ``source`` names where the text came from in messages that have no field (a file's
    path); ``field`` prefixes the field paths of problems (``--set hyperparameters.x``).
    """
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise ConfigError(field, f"{source} is {len(data):,} bytes; at most {MAX_BYTES:,}")
        text = _decoded(data, source, field)
    else:
        text = data
        if len(text) > MAX_BYTES:
            raise ConfigError(field, f"{source} is {len(text):,} characters; at most {MAX_BYTES:,}")
    try:
        loader = _BoundedLoader(text, source, field)  # reads the text: may refuse a character
    except yaml.YAMLError as exc:
        raise ConfigError(field, _yaml_message(exc, source, text)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Measure(field).walk(node, field, 0)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(field, _yaml_message(exc, source, text)) from None
    finally:
        loader.dispose()


def _decoded(data: bytes, source: str, field: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise ConfigError(
            field,
            f"{source} is not UTF-8 text: byte 0x{byte} on line {line} (offset {exc.start})",
        ) from None


def _yaml_message(exc: yaml.YAMLError, source: str, text: str) -> str:
    """One line: where and what, without PyYAML's multi-line snippet."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return (
            f"{source} is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: "
            f"{exc.problem}"
        )
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return (
            f"{source} is not valid YAML: line {line}: character #x{exc.character:04x} "
            "is not allowed (a control character)"
        )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{source} is not valid YAML: {first[:80]}"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth and alias budget while composing, and a
    value error while constructing (an int of 5,000 digits) said with its line."""

    def __init__(self, text: str, source: str, field: str) -> None:
        super().__init__(text)
        self._source, self._field = source, field
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ConfigError(
                    self._field, f"{self._source} line {line}: more than {MAX_ALIASES} aliases"
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigError(
                    self._field,
                    f"{self._source} line {line}: nested deeper than {MAX_DEPTH} levels",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        refused = _REFUSED_TAGS.get(node.tag)
        if refused:
            raise ConfigError(
                self._field,
                f"{self._source} line {node.start_mark.line + 1}: a config holds text, "
                f"numbers, lists and mappings, not {refused}",
            )
        if node.tag == _TIMESTAMP_TAG and isinstance(node, ScalarNode):
            return node.value  # the text written: a date is a version or a name here
        try:
            return super().construct_object(node, deep)
        except ConfigError:
            raise
        except (ValueError, OverflowError) as exc:
            raise ConfigError(
                self._field,
                f"{self._source} line {node.start_mark.line + 1}: {str(exc)[:60]}",
            ) from None


class _Measure:
    """What a node graph expands to, each shared node measured once: (values,
    characters, height). The first node over a bound, in post-order, is the deepest one,
    so the problem names the field that holds the expansion."""

    def __init__(self, field: str) -> None:
        self._field = field
        self._seen: dict[int, tuple[int, int, int]] = {}

    def walk(self, node: Node, path: str, depth: int) -> tuple[int, int, int]:
        known = self._seen.get(id(node))
        if known is not None:
            self._check(known, path, depth, node)
            return known
        if depth > MAX_DEPTH:  # also what a cycle (&a [*a]) runs into
            raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels (through aliases)")
        values, chars, height = 1, 0, 0
        if isinstance(node, ScalarNode):
            chars = len(node.value)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                size = self.walk(item, f"{path}[{index}]", depth + 1)
                values, chars, height = values + size[0], chars + size[1], max(height, size[2] + 1)
        elif isinstance(node, MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                name = _key_name(key)
                if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                    line, first = key.start_mark.line + 1, lines.get((key.tag, key.value))
                    lines[(key.tag, key.value)] = line
                    if first is not None:
                        raise ConfigError(
                            _join(path, name),
                            f"is given twice in one mapping (lines {first} and {line}); keep one",
                        )
                for child, child_path in ((key, path), (value, _join(path, name))):
                    size = self.walk(child, child_path, depth + 1)
                    values, chars = values + size[0], chars + size[1]
                    height = max(height, size[2] + 1)
        measured = (values, chars, height)
        self._seen[id(node)] = measured
        self._check(measured, path, depth, node)
        return measured

    def _check(self, measured: tuple[int, int, int], path: str, depth: int, node: Node) -> None:
        values, chars, height = measured
        if values > MAX_VALUES:
            raise ConfigError(
                path,
                f"expands to more than {MAX_VALUES:,} values (YAML aliases); "
                "write the values out or shorten them",
            )
        if chars > MAX_CHARS:
            raise ConfigError(path, f"expands to more than {MAX_CHARS:,} characters (YAML aliases)")
        if depth + height > MAX_DEPTH:
            raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels (through aliases)")


def _key_name(key: Node) -> str:
    if isinstance(key, ScalarNode):
        return key.value if len(key.value) <= 40 else quote(key.value)
    return f"<{type(key).__name__.removesuffix('Node').lower()} key>"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
