"""mkdocs hook: the recipe reference page is rendered from the recipe's JSON schema.

The schema (``src/ipex_aot/resources/recipe.schema.json``) is what ``recipe
validate`` checks, so the reference cannot drift from the validator: a page
holding the marker ``<!-- recipe-schema -->`` gets one table row per key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKER = "<!-- recipe-schema -->"
SCHEMA = Path(__file__).resolve().parents[2] / "src" / "ipex_aot" / "resources" / "recipe.schema.json"


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        return {**root["$defs"][ref.rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _kind(node: dict, root: dict) -> str:
    ref = node.get("$ref")
    if ref:
        return f"{ref.rsplit('/', 1)[1]} (see below)"
    node = _resolve(node, root)
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node and "type" not in node:
        return " or ".join(_kind(n, root) for n in node["oneOf"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_kind(node.get('items', {}), root)}"
    if kind == "string" and node.get("pattern"):
        return f"string matching `{node['pattern']}`".replace("|", "\\|")
    if kind == "object" and isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
        return f"mapping to {_kind(node['additionalProperties'], root)}"
    return kind or "any"


def _rows(node: dict, root: dict, prefix: str, required: set[str]) -> list[str]:
    rows = []
    for key, child in node.get("properties", {}).items():
        child = _resolve(child, root)
        path = f"{prefix}{key}"
        description = child.get("description", "").replace("|", "\\|")
        rows.append(f"| `{path}` | {'yes' if key in required else ''} | {_kind(child, root)} | {description} |")
        if "properties" in child:
            rows += _rows(child, root, f"{path}.", set(child.get("required", [])))
    return rows


def render(schema: dict[str, Any]) -> str:
    """The reference table of every recipe key, in the schema's order, then the shared value types."""
    head = ["| key | required | type | meaning |", "| --- | --- | --- | --- |"]
    defs = ["", "| value type | form | meaning |", "| --- | --- | --- |"]
    for name, node in schema.get("$defs", {}).items():
        defs.append(f"| {name} | {_kind(node, schema)} | {node.get('description', '')} |")
    return "\n".join(head + _rows(schema, schema, "", set(schema.get("required", []))) + defs)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(json.loads(SCHEMA.read_text(encoding="utf-8"))))
