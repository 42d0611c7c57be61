"""Segment keys of contextual routing: a request's context values as one stable string
(``plan=pro``, ``plan=pro|region=eu``), percent-escaped so every key is unambiguous, and back.
See gateway.bandit.contextual for how segments are routed."""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_ESCAPES = (("%", "%25"), ("|", "%7C"), ("=", "%3D"))


def _escape(text: str) -> str:
    for raw, esc in _ESCAPES:  # '%' first, so escapes are never escaped twice
        text = text.replace(raw, esc)
    return text


def _unescape(text: str) -> str:
    for raw, esc in reversed(_ESCAPES):  # '%' last
        text = text.replace(esc, raw)
    return text


def _render(value: Any, name: str) -> str:
    if value is None:
        raise ValueError(f"context feature {name!r} has no value")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def segment_of(row: Mapping[str, Any] | Sequence[Any], feature_names: Sequence[str], context: Sequence[str]) -> str:
    """The segment key of ``row``: ``name=value`` for each of ``context``, joined by ``|``.

    ``row`` is a mapping by feature name or a sequence in ``feature_names`` order. Values:
    ``str()``, real numbers as ``repr(float(x))`` (booleans as ``True``/``False``); ``%``,
    ``|`` and ``=`` are percent-escaped in names and values. Stable across processes.

    Raises
    ------
    ValueError
        Empty ``context``, a duplicate or unknown context name, a row of the wrong length,
        a missing feature or a ``None`` value.

    Examples
    --------
    >>> segment_of(["pro", 2], ["plan", "seats"], ["plan", "seats"])
    'plan=pro|seats=2.0'
    >>> segment_of({"a=b": "x"}, ["a=b"], ["a=b"])
    'a%3Db=x'
    """
    ctx = [str(c) for c in context]
    if not ctx:
        raise ValueError("context must name at least one feature")
    if len(set(ctx)) != len(ctx):
        raise ValueError(f"context names must be unique, got {ctx}")
    names = [str(f) for f in feature_names]
    unknown = [c for c in ctx if c not in names]
    if unknown:
        raise ValueError(f"context features {unknown} are not among the features {names}")
    if isinstance(row, Mapping):
        missing = [c for c in ctx if c not in row]
        if missing:
            raise ValueError(f"row lacks context features {missing}")
        values = [row[c] for c in ctx]
    else:
        if isinstance(row, (str, bytes)) or len(row) != len(names):
            raise ValueError(f"row must be a mapping or a sequence of {len(names)} values")
        values = [row[names.index(c)] for c in ctx]
    return "|".join(f"{_escape(c)}={_escape(_render(v, c))}" for c, v in zip(ctx, values))


def parse_segment(key: str) -> dict[str, str]:
    """The ``{name: value}`` (values as rendered strings) of a key from :func:`segment_of`.

    >>> parse_segment("plan=pro|region=eu")
    {'plan': 'pro', 'region': 'eu'}
    """
    out: dict[str, str] = {}
    for part in str(key).split("|"):
        name, sep, value = part.partition("=")
        if not sep or "=" in value:
            raise ValueError(f"not a segment key: {key!r}")
        out[_unescape(name)] = _unescape(value)
    return out
