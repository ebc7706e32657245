"""Thin route handlers: parse, resolve, delegate, format."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from backends.completion_types import CompletionRequest
from backends.errors import PermissionDeniedError
from backends.model_types import ModelList
from backends.openai_types import ChatCompletionRequest
from backends.protocol import Backend
from backends.settings import Task
from gateway import dispatch, tutorial
from gateway.openai_chat import complete_chat, open_chat_stream
from gateway.openai_completions import complete, open_completion_stream
from gateway.openapi_bodies import json_body
from gateway.rate_limits import limit_chain
from gateway.request_record import current_record
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


def model_chain(request: Request, name: str, task: Task, endpoint: str) -> list[Backend]:
    """``_chain`` for the request's key. The model routes read the router and the key's
    models from the ``Request`` rather than through two dependencies: FastAPI's resolution of
    them cost more than the rest of the handler (bench/passthrough.py)."""
    return _chain(router_of(request), name, allowed_of(request), task, endpoint)


def router_of(request: Request) -> ModelRouter:
    router: ModelRouter = request.app.state.router
    return router


def allowed_of(request: Request) -> list[str] | None:
    """The models the request's API key may use (None: any)."""
    allowed: list[str] | None = request.scope.get("state", {}).get("allowed_models")
    return allowed


def _chain(
    router: ModelRouter, name: str, allowed: list[str] | None, task: Task, endpoint: str
) -> list[Backend]:
    """The backends that may serve ``name`` for ``endpoint``: the model, then its fallbacks."""
    record = current_record()
    if record is not None:
        record.requested = name
    backend = router.resolve(name, allowed)
    if not router.is_allowed(backend, allowed):
        raise PermissionDeniedError(f"this API key may not use model '{name}'", param="model")
    router.require_task(backend, name, task, endpoint)
    return limit_chain(router.chain(backend, allowed))


@api.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    chain = model_chain(request, body.model, "generate", "/v1/chat/completions")
    if body.stream:
        stream = await dispatch.open_first(chain, lambda b: open_chat_stream(b, body))
        primed = stream.result
        return sse_response(primed.first, primed.rest, headers=stream.headers())
    answer = await dispatch.open_first(chain, lambda b: complete_chat(b, body))
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())


@api.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    chain = model_chain(request, body.model, "generate", "/v1/completions")
    if body.stream:
        stream = await dispatch.open_first(chain, lambda b: open_completion_stream(b, body))
        primed = stream.result
        return sse_response(primed.first, primed.rest, headers=stream.headers())
    answer = await dispatch.open_first(chain, lambda b: complete(b, body))
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())


@api.post("/", openapi_extra=json_body(tutorial.TutorialRequest))
async def tutorials_api(request: Request) -> Response:
    """The tutorials' ``POST /`` (``gateway.tutorial``): the body is JSON whatever its type."""
    body = tutorial.parse_body(await request.body())
    chain = model_chain(request, body.model_name, "generate", "/")
    answer = await dispatch.open_first(chain, lambda b: tutorial.answer(b, body))
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())


@api.get("/v1/models")
async def list_models(router: RouterDep, allowed: AllowedDep) -> Response:
    models = ModelList(data=await router.list_models(allowed))
    return Response(models.model_dump_json(), media_type="application/json")


@api.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, router: RouterDep, allowed: AllowedDep) -> Response:
    card = await router.card(model_id, allowed)
    return Response(card.model_dump_json(), media_type="application/json")


@api.get("/health")
async def health(router: RouterDep) -> JSONResponse:
    states = await router.health()
    preloaded = [states[route.name].status for route in router.preloaded()]
    # Preloaded models are loaded before the server answers; one unloaded since (idle, evicted)
    # loads again on demand, so only a failed load makes the server not ready.
    ready = "error" not in preloaded
    status = "unavailable" if not ready else "degraded" if "degraded" in preloaded else "ok"
    body: dict[str, Any] = {
        "status": status,
        "models": {
            name: {"status": h.status, **({"detail": h.detail} if h.detail else {})}
            for name, h in states.items()
        },
    }
    return JSONResponse(body, status_code=200 if ready else 503)
