"""``CrossFieldError``: what a request type's check across fields raises to name the field to
blame (pydantic reports such a check at the body's root; the surfaces read ``param`` off it). A
leaf: the standard library only."""

from __future__ import annotations


class CrossFieldError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
