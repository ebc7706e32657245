"""The core's own contracts: one registry, streams that release what they hold when closed."""

from __future__ import annotations

import typing

import pytest

from backends.protocol import OpenStream
from backends.registry import KINDS, BackendSettings, backend_kinds, settings_class


def test_the_registry_and_the_settings_union_list_the_same_kinds():
    assert set(typing.get_args(BackendSettings)) == {kind.settings for kind in KINDS.values()}
    for kind in backend_kinds():
        assert settings_class(kind) is KINDS[kind].settings
        literal = settings_class(kind).model_fields["backend"].annotation  # type: ignore[union-attr]
        assert typing.get_args(literal) == (kind,)
    assert settings_class("nope") is None


@pytest.mark.anyio
async def test_closing_a_stream_never_read_still_releases_it():
    released: list[str] = []

    async def items():
        try:
            yield 1
        finally:
            released.append("generator")  # never runs: the generator never started

    async def cleanup() -> None:
        released.append("cleanup")

    stream = OpenStream(items(), replica="http://r", cleanup=cleanup)
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert released == ["cleanup"]
    assert stream.replica == "http://r"
