"""JSON from files fmnist did not necessarily write (model metadata, ONNX properties),
parsed within bounds.

``json.loads`` would take a 100 MB string, recurse into ``[[[[...`` until RecursionError,
turn ``1e999`` into ``inf`` and accept ``NaN``. Here the length and the nesting depth are
checked before parsing, and non-finite numbers are refused, so what comes back is plain,
finite data of bounded size.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

MAX_DEPTH = 32  # model cards nest 4 levels, checkpoints 8; 32 leaves room and stays far from recursion limits
# A JSON string literal; escapes are consumed whole, so \" does not end it. Linear time.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENERS = {ord("["), ord("{")}
_CLOSERS = {ord("]"), ord("}")}


class JsonRefused(ValueError):
    """The text is too long, too deep, or not plain finite JSON; the message says which."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { in ``text``, brackets inside strings not counted."""
    skeleton = _STRING.sub("", text).encode("utf-8", "replace")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int64)
    steps[np.isin(codes, list(_OPENERS))] = 1
    steps[np.isin(codes, list(_CLOSERS))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a number JSON allows")


def loads_bounded(text: str, *, max_chars: int, max_depth: int = MAX_DEPTH, finite: bool = True) -> Any:
    """Parse ``text`` as JSON after checking its length and nesting; JsonRefused otherwise.

    With ``finite`` (the default) NaN, Infinity and numbers beyond float range are refused;
    without it they parse as Python's json does (for documents whose schema checks the
    numbers it uses).
    """
    if not isinstance(text, str):
        raise JsonRefused(f"expected JSON text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise JsonRefused(f"{len(text):,} characters of JSON, more than the {max_chars:,} allowed")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonRefused(f"JSON nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        if not finite:
            return json.loads(text)
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except JsonRefused:
        raise
    except RecursionError:  # cannot happen after the depth check; kept as a second guard
        raise JsonRefused("JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and integers beyond Python's digit limit
        if "integer string conversion" in str(error):
            raise JsonRefused("not valid JSON here (a number of thousands of digits)") from None
        raise JsonRefused(f"not valid JSON ({str(error).splitlines()[0][:120]})") from None
