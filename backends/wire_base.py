"""The two bases of the OpenAI-family wire types (``openai_types``, ``completion_types``,
``embedding_types``, ``model_types``): requests tolerate unknown fields (clients send vendor
extras) but validate every known one; responses are exact, and leave out the ``None`` fields
OpenAI omits. A leaf: pydantic only."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class WireRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WireResponse(BaseModel):
    """Response types: ``None`` in a field named in ``_omit_if_none`` is left out of the JSON."""

    model_config = ConfigDict(extra="forbid")
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._omitted_if_none():
            if data.get(key, 0) is None:
                del data[key]
        return data

    def _omitted_if_none(self) -> frozenset[str]:
        return self._omit_if_none
