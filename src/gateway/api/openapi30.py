"""The OpenAPI 3.0 schemas of pydantic models.

Pydantic writes JSON Schema 2020-12; OpenAPI 3.0.3 (what openapi-spec-validator and
schemathesis check the document against) speaks an older dialect. The differences that our
models meet are converted here, and anything else 3.0 does not know is refused, so that a new
model cannot slip a keyword into the document that its readers would ignore:

- `anyOf: [X, {type: null}]` becomes X with `nullable: true` (and null among an enum's values).
  When X is a `$ref`, the definition is written in place: 3.0 ignores `nullable` beside a `$ref`.
- `const` becomes a one-value `enum`; a numeric `exclusiveMinimum`/`exclusiveMaximum` becomes
  `minimum`/`maximum` with the boolean flag.
- A `$ref` with siblings (a field's description) is wrapped in `allOf`: 3.0 ignores them.
- Titles are dropped (pydantic makes one of every name); so is `default: null` on a field that
  refuses null (it only means "may be absent", which `required` already says). Descriptions are
  prose: the line breaks of a docstring are joined.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.schemas.base import REF_TEMPLATE

# The Schema Object's fields in OpenAPI 3.0.3.
KEYWORDS = {
    "$ref", "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "required",
    "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties", "additionalProperties", "description",
    "format", "default", "nullable", "discriminator", "readOnly", "writeOnly", "example", "externalDocs",
    "deprecated",
}
NULL = {"type": "null"}
PREFIX = REF_TEMPLATE.format(model="")


def component_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """`components.schemas` for these models and every model they use."""
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = top.get("$defs", {})
    inlined: set[str] = set()
    out = {name: convert(schema, defs, inlined) for name, schema in defs.items()}
    # A definition written in place of every use is not a component of its own.
    text = json.dumps(out)
    return {name: s for name, s in out.items() if name not in inlined or f'"{PREFIX}{name}"' in text}


def convert(node: dict[str, Any], defs: dict[str, Any], inlined: set[str]) -> dict[str, Any]:
    """One JSON Schema 2020-12 node as an OpenAPI 3.0 Schema Object."""
    node = {k: v for k, v in node.items() if k != "title"}
    if NULL in node.get("anyOf", ()):
        return _nullable(node, defs, inlined)
    unknown = set(node) - KEYWORDS - {"const"}
    if unknown:
        raise ValueError(f"not in OpenAPI 3.0: {sorted(unknown)} in {node}")
    if isinstance(node.get("type"), list):
        raise ValueError(f"OpenAPI 3.0 has one type per schema: {node}")
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(node.get(bound, True), bool):
            node[flag], node[bound] = node[bound], True
    for key in ("items", "not"):
        if key in node:
            node[key] = convert(node[key], defs, inlined)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = convert(node["additionalProperties"], defs, inlined)
    if "properties" in node:
        node["properties"] = {k: convert(v, defs, inlined) for k, v in node["properties"].items()}
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [convert(v, defs, inlined) for v in node[key]]
    if "default" in node and node["default"] is None and not node.get("nullable"):
        del node["default"]
    if "$ref" in node and len(node) > 1:
        node = {"allOf": [{"$ref": node.pop("$ref")}], **node}
    return node


def _nullable(node: dict[str, Any], defs: dict[str, Any], inlined: set[str]) -> dict[str, Any]:
    rest = [s for s in node.pop("anyOf") if s != NULL]
    if len(rest) != 1:
        raise ValueError(f"OpenAPI 3.0 cannot make a union of several schemas nullable: {rest}")
    (inner,) = rest
    if "$ref" in inner:
        name = inner["$ref"].removeprefix(PREFIX)
        inlined.add(name)
        inner = defs[name]
    # The field's own description and default win over the definition's.
    out = convert({**inner, **node, "nullable": True}, defs, inlined)
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out
