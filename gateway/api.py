"""Thin route handlers: parse, resolve, delegate, format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from backends.errors import PermissionDeniedError
from backends.openai_types import ChatCompletionRequest, ModelList
from backends.protocol import Backend, OpenAIChatRelay
from gateway import dispatch
from gateway.openai_chat import chunks_of, collect_completion, to_generation_request
from gateway.routing import ModelRouter
from gateway.sse import sse_response

api = APIRouter()


# Dependencies are `async def`: FastAPI would run a plain `def` in a worker thread per call.
async def get_router(request: Request) -> ModelRouter:
    router: ModelRouter = request.app.state.router
    return router


async def allowed_models(request: Request) -> list[str] | None:
    allowed: list[str] | None = getattr(request.state, "allowed_models", None)
    return allowed


RouterDep = Annotated[ModelRouter, Depends(get_router)]
AllowedDep = Annotated[list[str] | None, Depends(allowed_models)]


def _chain(router: ModelRouter, name: str, allowed: list[str] | None) -> list[Backend]:
    backend = router.resolve(name, allowed)
    if not router.is_allowed(backend, allowed):
        raise PermissionDeniedError(f"this API key may not use model '{name}'", param="model")
    return router.chain(backend, allowed)


@dataclass
class _Primed:
    """A stream whose first payload has arrived (None: it ended at once)."""

    first: bytes | None
    rest: AsyncIterator[bytes]
    replica: str | None


@api.post("/v1/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, router: RouterDep, allowed: AllowedDep
) -> Response:
    chain = _chain(router, body.model, allowed)
    request = to_generation_request(body)

    async def open_stream(backend: Backend) -> _Primed:
        if isinstance(backend, OpenAIChatRelay):
            relayed = await backend.relay_chat_stream(body)
            return await _prime(relayed, relayed.replica)
        events = await backend.generate(request)
        chunks = chunks_of(events, body.model, body.include_usage)
        return await _prime(_encoded(chunks), events.replica)

    async def complete(backend: Backend) -> tuple[bytes, str | None]:
        if isinstance(backend, OpenAIChatRelay):
            relayed = await backend.relay_chat(body)
            return relayed.data, relayed.replica
        events = await backend.generate(request)
        completion = await collect_completion(events, body.model)
        return completion.model_dump_json().encode(), events.replica

    if body.stream:
        stream = await dispatch.open_first(chain, open_stream, lambda p: p.replica)
        primed = stream.result
        return sse_response(primed.first, primed.rest, headers=stream.headers())
    answer = await dispatch.open_first(chain, complete, lambda r: r[1])
    return Response(answer.result[0], media_type="application/json", headers=answer.headers())


async def _encoded(chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk.model_dump_json().encode()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _prime(payloads: AsyncIterator[bytes], replica: str | None) -> _Primed:
    try:
        first: bytes | None = await anext(payloads)
    except StopAsyncIteration:
        first = None
    except BaseException:
        aclose = getattr(payloads, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    return _Primed(first, payloads, replica)


@api.get("/v1/models")
async def list_models(router: RouterDep, allowed: AllowedDep) -> Response:
    models = ModelList(data=router.list_models(allowed))
    return Response(models.model_dump_json(), media_type="application/json")


@api.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, router: RouterDep, allowed: AllowedDep) -> Response:
    return Response(router.card(model_id, allowed).model_dump_json(), media_type="application/json")


@api.get("/health")
async def health(router: RouterDep) -> JSONResponse:
    states = await router.health()
    preloaded = [states[route.name].status for route in router.preloaded()]
    ready = all(status in ("ok", "degraded") for status in preloaded)
    status = "unavailable" if not ready else "degraded" if "degraded" in preloaded else "ok"
    body: dict[str, Any] = {
        "status": status,
        "models": {
            name: {"status": h.status, **({"detail": h.detail} if h.detail else {})}
            for name, h in states.items()
        },
    }
    return JSONResponse(body, status_code=200 if ready else 503)
