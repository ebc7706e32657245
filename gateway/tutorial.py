"""The tutorials' API (``POST /``), exactly as their FastAPI wrappers answer it: ``{"prompt",
"history"?, "model"?, "max_tokens"?, "max_length"?, "temperature"?, "top_p"?}`` in,
``{"response", "history", "status": 200, "time": "YYYY-MM-DD HH:MM:SS"}`` (local time) out
(``history``: the one sent plus this exchange, as ChatGLM's ``api.py`` answers).

The body is read as JSON whatever the ``Content-Type`` says (one tutorial sends
``application/jons``). ``history`` is replayed before the prompt through the model's own chat
template, as ``{"role", "content"}`` turns or ChatGLM-style ``[question, answer]`` pairs.
The answer is the model's reply without its thinking. Errors use the OpenAI envelope.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends import events as ev
from backends.errors import InternalError, InvalidRequestError
from backends.protocol import Backend, Relayed
from backends.requests import GenerationRequest, Message, Sampling, TextPart

# What the tutorials' scripts pass to ``generate(max_new_tokens=...)`` when they set nothing.
DEFAULT_MAX_TOKENS = 512
DEFAULT_MODEL = "default"


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


Pair = Annotated[list[str], Field(min_length=2, max_length=2)]


class TutorialRequest(BaseModel):
    """The tutorials' request body; unknown fields are ignored, as their servers ignore them."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    history: list[Turn | Pair] | None = None
    model: Annotated[str, Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_length: Annotated[int, Field(ge=1)] | None = None  # ChatGLM's api.py: a cap
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL


def parse_body(raw: bytes) -> TutorialRequest:
    """The request from the raw body, whatever its ``Content-Type``. Raises
    ``InvalidRequestError`` or ``RequestValidationError`` (both answered with a 400)."""
    if not raw.strip():
        raise InvalidRequestError('request body is missing: send {"prompt": "..."}')
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequestError("request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError('request body must be a JSON object: {"prompt": "..."}')
    try:
        return TutorialRequest.model_validate(data)
    except RecursionError as exc:
        raise InvalidRequestError("request body is nested too deeply") from exc
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc


def to_generation_request(body: TutorialRequest) -> GenerationRequest:
    """The history, then the prompt, as a chat for the model's template."""
    messages = [m for turn in body.history or [] for m in _history_messages(turn)]
    messages.append(Message("user", (TextPart(body.prompt),)))
    capped = body.max_tokens is None and body.max_length is not None
    return GenerationRequest(
        model=body.model_name,
        messages=tuple(messages),
        max_tokens=body.max_tokens or body.max_length or DEFAULT_MAX_TOKENS,
        # ChatGLM's max_length bounds prompt and answer together: never a reason to refuse
        max_tokens_fits_window=capped,
        sampling=Sampling(temperature=body.temperature, top_p=body.top_p),
    )


def next_history(body: TutorialRequest, response: str) -> list[Any]:
    """The history with this exchange added, in the form it was sent (ChatGLM's api.py
    answers it so that a script can send it back): pairs unless it came as role turns."""
    history: list[Any] = [
        turn.model_dump() if isinstance(turn, Turn) else turn for turn in body.history or []
    ]
    if any(isinstance(turn, Turn) for turn in body.history or []):
        return [
            *history,
            {"role": "user", "content": body.prompt},
            {"role": "assistant", "content": response},
        ]
    return [*history, [body.prompt, response]]


def _history_messages(turn: Turn | list[str]) -> list[Message]:
    if isinstance(turn, Turn):
        return [Message(turn.role, (TextPart(turn.content),))]
    question, reply = turn
    return [Message("user", (TextPart(question),)), Message("assistant", (TextPart(reply),))]


async def answer(backend: Backend, body: TutorialRequest) -> Relayed:
    """The model's reply to ``body`` as the tutorials' JSON answer."""
    events = await backend.generate(to_generation_request(body))
    text: list[str] = []
    ended = False
    try:
        async for event in events:
            if isinstance(event, ev.TextDelta) and event.index == 0:
                text.append(event.text)
            elif isinstance(event, ev.Usage):
                ended = True
    finally:
        await events.aclose()
    if not ended:
        raise InternalError("the backend's answer ended without usage")
    response = "".join(text)
    reply = {
        "response": response,
        "history": next_history(body, response),
        "status": 200,
        "time": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
    }
    return Relayed(json.dumps(reply, ensure_ascii=False).encode(), events.replica)
