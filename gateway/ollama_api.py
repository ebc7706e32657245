"""Ollama's API at ``/api/*``, over every backend: thin handlers (parse, resolve, delegate,
format). Translation is in ``gateway.ollama_surface``, answers in ``gateway.ollama_stream``,
the open steps in ``gateway.ollama_serving``, model listings in ``gateway.ollama_models``.

Bodies are read as JSON whatever their ``Content-Type`` (Ollama's documented examples use
``curl -d``, which sends a form type). Errors come out in Ollama's shape
(``gateway.errors``); routes that manage models (pull, push, create, copy, delete, blobs)
answer a 400 saying models are managed in config.yaml.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from backends.embeddings import EmbeddingRequest
from backends.errors import InvalidRequestError
from backends.protocol import Backend
from gateway import dispatch, ollama_models
from gateway.api import AllowedDep, RouterDep, model_chain, router_of
from gateway.lifecycle import ModelLifecycle
from gateway.ollama_serving import Ask, complete, embed, keep_alive, load, open_stream, unload
from gateway.ollama_stream import ndjson_response
from gateway.ollama_surface import (
    chat_request,
    embed_inputs,
    embedding_request,
    generate_request,
    model_name,
    num_ctx,
)
from gateway.ollama_types import (
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaShowRequest,
)
from gateway.openapi_bodies import json_body

ollama_api = APIRouter()

B = TypeVar("B", bound=BaseModel)


async def _body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _lifecycle(request: Request) -> ModelLifecycle | None:
    lifecycle: ModelLifecycle | None = getattr(request.app.state, "lifecycle", None)
    return lifecycle


def _json(body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@ollama_api.post("/api/chat", openapi_extra=json_body(OllamaChatRequest))
async def chat(request: Request) -> Response:
    started = time.monotonic_ns()
    body = await _body(request, OllamaChatRequest)
    name = model_name(router_of(request), body.model)
    chain = model_chain(request, name, "generate", "/api/chat")
    unloading = keep_alive(_lifecycle(request), chain[0], body.keep_alive)
    if not body.messages:
        if unloading:
            return await unload(_lifecycle(request), chain[0], "chat", name)
        return _served(await dispatch.open_first(chain[:1], lambda b: load(b, "chat", name)))
    ask = Ask("chat", body.model, chat_request(body, name), num_ctx(body), started)
    return await _answer(chain, ask, body.stream)


@ollama_api.post("/api/generate", openapi_extra=json_body(OllamaGenerateRequest))
async def generate(request: Request) -> Response:
    started = time.monotonic_ns()
    body = await _body(request, OllamaGenerateRequest)
    name = model_name(router_of(request), body.model)
    chain = model_chain(request, name, "generate", "/api/generate")
    unloading = keep_alive(_lifecycle(request), chain[0], body.keep_alive)
    if not body.prompt and not body.images:
        if unloading:
            return await unload(_lifecycle(request), chain[0], "generate", name)
        return _served(await dispatch.open_first(chain[:1], lambda b: load(b, "generate", name)))
    ask = Ask("generate", body.model, generate_request(body, name), num_ctx(body), started)
    return await _answer(chain, ask, body.stream)


async def _answer(chain: list[Backend], ask: Ask, stream: bool) -> Response:
    if stream:
        served = await dispatch.open_first(chain, lambda b: open_stream(b, ask))
        primed = served.result
        return ndjson_response(primed.first, primed.rest, headers=served.headers())
    return _served(await dispatch.open_first(chain, lambda b: complete(b, ask)))


def _served(served: dispatch.Served[Any]) -> Response:
    return Response(served.result.data, media_type="application/json", headers=served.headers())


@ollama_api.post("/api/embed", openapi_extra=json_body(OllamaEmbedRequest))
async def embed_route(request: Request) -> Response:
    started = time.monotonic_ns()
    body = await _body(request, OllamaEmbedRequest)
    name = model_name(router_of(request), body.model)
    chain = model_chain(request, name, "embed", "/api/embed")
    keep_alive(_lifecycle(request), chain[0], body.keep_alive)
    wanted = embedding_request(body, name)
    served = await dispatch.open_first(chain, lambda b: embed(b, wanted, started, num_ctx(body)))
    result = served.result
    return _json_served(
        {
            "model": body.model,
            "embeddings": result.vectors,
            **result.durations(),
            "prompt_eval_count": result.prompt_tokens,
        },
        served,
    )


@ollama_api.post("/api/embeddings", openapi_extra=json_body(OllamaEmbeddingsRequest))
async def embeddings(request: Request) -> Response:
    """The older route: one ``prompt``, one ``embedding`` (an empty prompt only loads)."""
    started = time.monotonic_ns()
    body = await _body(request, OllamaEmbeddingsRequest)
    name = model_name(router_of(request), body.model)
    chain = model_chain(request, name, "embed", "/api/embeddings")
    keep_alive(_lifecycle(request), chain[0], body.keep_alive)
    wanted = EmbeddingRequest(name, embed_inputs(body.prompt))
    served = await dispatch.open_first(chain, lambda b: embed(b, wanted, started, num_ctx(body)))
    vectors = served.result.vectors
    return _json_served({"embedding": vectors[0] if vectors else []}, served)


def _json_served(body: dict[str, Any], served: dispatch.Served[Any]) -> Response:
    data = json.dumps(body, separators=(",", ":"))
    return Response(data, media_type="application/json", headers=served.headers())


@ollama_api.get("/api/tags")
async def tags(router: RouterDep, allowed: AllowedDep) -> Response:
    return _json(ollama_models.tags(await router.list_models(allowed)))


@ollama_api.post("/api/show", openapi_extra=json_body(OllamaShowRequest))
async def show(request: Request, router: RouterDep, allowed: AllowedDep) -> Response:
    body = await _body(request, OllamaShowRequest)
    if not body.model_name:
        raise InvalidRequestError("model is required", param="model")
    card = await router.card(model_name(router, body.model_name), allowed)
    return _json(ollama_models.show(card))


@ollama_api.get("/api/ps")
async def ps(request: Request, router: RouterDep, allowed: AllowedDep) -> Response:
    lifecycle = _lifecycle(request)

    def expires_in(name: str) -> float | None:
        if lifecycle is None or not lifecycle.manages(name):
            return None
        return lifecycle.expires_in(name)

    return _json(ollama_models.ps(await router.list_models(allowed), expires_in))


@ollama_api.get("/api/version")
async def version() -> Response:
    return _json(ollama_models.version())


_MANAGED = "models are managed in config.yaml (add an entry there and restart llmgate)"
_ACTIONS = {
    "pull": "pull",
    "push": "push",
    "create": "create",
    "copy": "copy",
    "delete": "delete",
    "blobs": "take blobs for",
}


# One decorator per method: one route with two methods gives both operations the same
# operationId in /openapi.json.
@ollama_api.post("/api/pull")
@ollama_api.post("/api/push")
@ollama_api.post("/api/create")
@ollama_api.post("/api/copy")
@ollama_api.delete("/api/delete")
@ollama_api.post("/api/delete")
@ollama_api.head("/api/blobs/{digest}")
@ollama_api.post("/api/blobs/{digest}")
async def manage_models(request: Request) -> Response:
    route = request.url.path.removeprefix("/api/").split("/")[0]
    raise InvalidRequestError(f"llmgate does not {_ACTIONS[route]} models: {_MANAGED}")
