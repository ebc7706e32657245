"""The ``POST /v1/embeddings`` route: parse, resolve (an embedding model, else 400), serve
through the model's fallbacks, answer. Translation is in ``gateway.openai_embeddings``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backends.embedding_types import CreateEmbeddingRequest
from gateway import dispatch
from gateway.api import model_chain
from gateway.openai_embeddings import create_embeddings

embeddings_api = APIRouter()


@embeddings_api.post("/v1/embeddings")
async def embeddings(body: CreateEmbeddingRequest, request: Request) -> Response:
    chain = model_chain(request, body.model, "embed", "/v1/embeddings")
    answer = await dispatch.open_first(chain, lambda backend: create_embeddings(backend, body))
    return Response(answer.result.data, media_type="application/json", headers=answer.headers())
