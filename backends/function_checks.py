"""What OpenAI requires of a function tool, checked alike by the chat and Responses request
types: its name (``check_function_name``) and that its ``parameters`` describe a JSON object
(``check_parameters``). Raised as ``ValueError``, which pydantic reports under the field's
path. A leaf: the standard library only."""

from __future__ import annotations

import json
import re
from typing import Any

_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_function_name(name: str) -> str:
    """OpenAI's rule for a function tool's name."""
    if not _FUNCTION_NAME.fullmatch(name):
        raise ValueError(
            f"the function name {name!r} must be 1 to 64 characters of a-z, A-Z, 0-9, "
            "underscores and dashes"
        )
    return name


def check_parameters(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A function's ``parameters`` are an object's schema (the arguments are a JSON object)."""
    if parameters is not None and parameters.get("type", "object") != "object":
        got = json.dumps(parameters["type"])
        raise ValueError(f'the parameters must be a JSON Schema of type "object", got {got}')
    return parameters
