"""A client that goes away stops its generation: the ASGI disconnect cancels the handler
(non-streaming) or closes the stream (streaming), and the engine sees the close."""

from __future__ import annotations

import pytest

from tests.unit.disconnect import call_then_disconnect

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_stops_generation(stream):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    fake, at_return, sent = await call_then_disconnect(body, 0.15)
    assert 0 < at_return < 100  # it was generating, and stopped long before 1000 tokens
    assert fake.tokens_generated == at_return  # nothing more after the disconnect
    assert fake.streams_closed == 1
    if not stream:
        assert not any(m["type"] == "http.response.start" for m in sent)
