"""The Responses API's routes (``POST /v1/responses``, stateless). Nothing is stored, so
retrieving, deleting or cancelling a response by id is a 404 in the OpenAI envelope that says
so (not the framework's route-level 404/405)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backends.errors import ContextLengthExceededError, NotFoundError
from backends.responses_types import ResponsesRequest
from gateway import dispatch
from gateway.api import model_chain
from gateway.openai_responses import (
    STATELESS,
    complete_response,
    open_response_stream,
    to_generation_request,
)
from gateway.sse import framed_response

responses_api = APIRouter()


@responses_api.post("/v1/responses")
async def create_response(body: ResponsesRequest, http: Request) -> Response:
    chain = model_chain(http, body.model, "generate", "/v1/responses")
    request = to_generation_request(body)
    try:
        if body.stream:
            opened = await dispatch.open_first(
                chain, lambda b: open_response_stream(b, body, request)
            )
            primed = opened.result
            return framed_response(primed.first, primed.rest, headers=opened.headers())
        answer = await dispatch.open_first(chain, lambda b: complete_response(b, body, request))
    except ContextLengthExceededError as exc:
        raise in_responses_terms(exc) from exc
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())


def in_responses_terms(exc: ContextLengthExceededError) -> ContextLengthExceededError:
    """The core names a chat's ``messages`` and ``max_tokens``; here they came as ``input``
    and ``max_output_tokens``."""
    if exc.param not in ("messages", "max_tokens"):
        return exc
    param = "input" if exc.param == "messages" else "max_output_tokens"
    return ContextLengthExceededError(exc.message.replace("messages", "input"), param=param)


# One decorator per method: FastAPI names an operation by its route, so one route with two
# methods gives two operations the same operationId in /openapi.json.
@responses_api.get("/v1/responses/{response_id}")
@responses_api.delete("/v1/responses/{response_id}")
async def stored_response(response_id: str) -> Response:
    raise NotFoundError(f"response '{response_id}' not found: {STATELESS}", param="response_id")


@responses_api.get("/v1/responses/{response_id}/input_items")
@responses_api.post("/v1/responses/{response_id}/cancel")
async def stored_response_action(response_id: str) -> Response:
    return await stored_response(response_id)
