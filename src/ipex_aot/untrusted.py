"""Reading what the project did not write in this run: bounded JSON, bounded YAML, printable text.

A recipe, a ``manifest.json`` inside someone's archive, a device cache left on disk, a ``build.json``
from another run: any of them may be damaged or hostile. Python's ``json`` and PyYAML recurse once per
nesting level (a 200,000-deep list is a RecursionError) and YAML aliases let a 1 KB file stand for
hundreds of millions of nodes (a MemoryError after minutes). The checks here walk the text or the
parser's event stream iteratively, so they cost one pass and cannot themselves blow the stack, and
they turn every such input into a ``ValueError`` with one line the caller can wrap in its own error.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

#: Deeper than any file this project writes (the device cache is 5 levels), far below Python's stack.
MAX_JSON_DEPTH = 64
#: A recipe is a few dozen keys; 32 levels leave room for any sane layout.
MAX_YAML_DEPTH = 32
#: Scalars and collections after alias expansion; the largest shipped recipe has about 100.
MAX_YAML_NODES = 20_000
#: Read no more than this of a recipe: a recipe is a few KB.
MAX_YAML_BYTES = 1 << 20

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


class TooDeep(ValueError):
    """Nested deeper than the bound allows."""


def json_depth(text: str) -> int:
    """The deepest nesting of brackets in JSON TEXT (strings skipped), in one iterative pass."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses documents nested deeper than MAX_DEPTH with a ValueError."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    depth = json_depth(text)
    if depth > max_depth:
        raise TooDeep(f"nested deeper than {max_depth} levels ({depth}); not a file this tool wrote")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth check makes this unreachable
        raise TooDeep(f"nested too deep to read (over {max_depth} levels)") from None


class YamlTooBig(ValueError):
    """A YAML document beyond the bounds; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def check_yaml_bounds(text: str, *, max_depth: int = MAX_YAML_DEPTH, max_nodes: int = MAX_YAML_NODES) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH or expanding (aliases included) to over MAX_NODES nodes.

    Walks PyYAML's event stream, whose parser keeps its own stack instead of recursing, and counts
    each anchor's expanded size once, so a 9x9 alias bomb is refused after reading its few lines.
    Syntax errors are left for the real load to report with its own marks.
    """
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []  # [expanded node count, anchor, start line]
    total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark else 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([1, event.anchor, line])
                if len(stack) > max_depth:
                    raise YamlTooBig(f"nested deeper than {max_depth} levels; a recipe is a few flat mappings", line)
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                count, anchor, _ = stack.pop()
                if anchor:
                    sizes[anchor] = count
                added = count
            elif isinstance(event, yaml.ScalarEvent):
                added = 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                added = sizes.get(event.anchor or "", 1)
            else:
                continue
            if stack:
                stack[-1][0] += added
                total = max(total, sum(frame[0] for frame in stack))
            else:
                total += added
            if total > max_nodes:
                raise YamlTooBig(f"expands to more than {max_nodes:,} values through its aliases (&/*); "
                                 "a recipe needs none of that size: remove the aliases", line)
    except yaml.YAMLError:
        return


def printable(text: str, keep: str = "") -> str:
    """TEXT with control characters (and other unprintable ones) escaped, safe to print to a terminal.

    KEEP names characters left as they are (the logger keeps line breaks of multi-line tails).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def not_a_regular_file(path: str | os.PathLike[str]) -> str | None:
    """What PATH is when it exists but is not a regular file ("a FIFO (named pipe)", …), else None.

    Asked with ``stat``, which never blocks: opening a FIFO to read it waits for a writer forever,
    and reading a device such as /dev/zero never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return "not a regular file"


def tool_message(text: str, limit: int = 300) -> str:
    """A tool's stderr as one printable line: the lines that say what went wrong, whole words, no layout."""
    lines = [" ".join(printable(line).split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "error" in line.lower() or "warning" in line.lower()]
    joined = "; ".join(errors or lines[-3:])
    if len(joined) > limit:
        joined = joined[:limit].rsplit(" ", 1)[0] + " …"
    return joined or "no message"
