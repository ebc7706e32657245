"""The Anthropic Messages API's routes: ``POST /v1/messages`` (streaming and not) and
``POST /v1/messages/count_tokens``, over every backend through ``generate``. Errors come out in
Anthropic's envelope (``gateway.errors`` picks it by path); any ``anthropic-version`` header is
accepted, and the key may come as ``x-api-key`` or ``Authorization: Bearer``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backends.anthropic_types import CountTokensRequest, MessagesRequest, TokenCount
from gateway import dispatch
from gateway.anthropic_messages import (
    complete_message,
    count_request,
    count_tokens,
    open_message_stream,
    to_generation_request,
)
from gateway.api import model_chain
from gateway.sse import framed_response

anthropic_api = APIRouter()


@anthropic_api.post("/v1/messages")
async def create_message(body: MessagesRequest, http: Request) -> Response:
    chain = model_chain(http, body.model, "generate", "/v1/messages")
    request = to_generation_request(body)
    if body.stream:
        stream = await dispatch.open_first(chain, lambda b: open_message_stream(b, body, request))
        primed = stream.result
        return framed_response(primed.first, primed.rest, headers=stream.headers())
    answer = await dispatch.open_first(chain, lambda b: complete_message(b, body, request))
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())


@anthropic_api.post("/v1/messages/count_tokens")
async def count_message_tokens(body: CountTokensRequest, http: Request) -> Response:
    chain = model_chain(http, body.model, "generate", "/v1/messages/count_tokens")
    request = count_request(body)
    counted = await dispatch.open_first(chain, lambda b: count_tokens(b, request))
    answer = TokenCount(input_tokens=counted.result.input_tokens)
    return Response(
        answer.model_dump_json(), media_type="application/json", headers=counted.headers()
    )
