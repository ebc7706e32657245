"""The chat page people use in a browser: ``GET /`` serves ``gateway/static/index.html`` and
``/static/*`` its assets (vendored Markdown renderer and sanitizer included: no CDN, works
offline). The page talks to this server's own ``/v1`` API; ``POST /`` is not the page's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

# Model output is rendered as sanitized Markdown; the policy is a second wall: no script but
# the page's own, no request to another origin (an injected <img> cannot call out).
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

page = APIRouter()


@page.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def chat_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


class _Assets(StaticFiles):
    """The page's assets, revalidated on every load (ETag), so an upgrade is seen at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        response.headers["x-content-type-options"] = "nosniff"
        return response


def install_chat_page(app: FastAPI) -> None:
    app.include_router(page)
    app.mount("/static", _Assets(directory=STATIC), name="static")
