"""The Ollama surface's request translation (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``): Ollama's wire requests into the core's ``GenerationRequest`` and
``EmbeddingRequest``. Pure functions, table-tested; what llmgate cannot honour is a 400 naming
the field, never silently dropped. The stream side is ``gateway.ollama_stream``; the routes are
in ``gateway.ollama_api``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from backends.embeddings import EmbeddingRequest
from backends.errors import InvalidRequestError, ModelNotFoundError, UnsupportedParameterError
from backends.requests import (
    ContentPart,
    GenerationRequest,
    Message,
    OtherPart,
    OutputConstraint,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.ollama_types import (
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaGenerationFields,
    OllamaMessage,
    OllamaOptions,
    ThinkValue,
    ToolChoiceValue,
)
from gateway.routing import ModelRouter

# -- model names ---------------------------------------------------------------------------


def model_name(router: ModelRouter, name: str) -> str:
    """The llmgate name for an Ollama ``model``: as sent when llmgate knows it, else without
    a ``:latest`` tag (Ollama clients add one to names without a tag)."""
    if name.endswith(":latest"):
        try:
            router.resolve(name)
        except ModelNotFoundError:
            return name.removesuffix(":latest")
    return name


# -- chat ----------------------------------------------------------------------------------


def chat_request(body: OllamaChatRequest, model: str) -> GenerationRequest:
    """The core request for ``/api/chat`` (``messages`` is not empty: that is a load)."""
    options = body.options or OllamaOptions()
    choice = body.tool_choice if body.tool_choice is not None else options.tool_choice
    tools = tuple(
        Tool(t.function.name, t.function.description, t.function.parameters)
        for t in body.tools or []
    )
    messages = _messages(body.messages)
    return _generation(
        body,
        model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice(choice),
        continue_final=continues(messages),
    )


def continues(messages: tuple[Message, ...]) -> bool:
    """As Ollama: a final assistant message (without calls) is the start of the answer, which
    the model continues (prefill); the reply holds only the continuation."""
    final = messages[-1] if messages else None
    return final is not None and final.role == "assistant" and not final.tool_calls


def tool_choice(value: ToolChoiceValue | None) -> ToolChoice | None:
    """llmgate's extension: OpenAI's ``tool_choice`` values (Ollama has none)."""
    if value is None:
        return None
    if isinstance(value, str) and value in ("auto", "none", "required"):
        return ToolChoice(value)  # type: ignore[arg-type]
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if isinstance(name, str) and name:
        return ToolChoice("function", name)
    raise InvalidRequestError(
        "tool_choice must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _messages(messages: list[OllamaMessage]) -> tuple[Message, ...]:
    """Core messages. Ollama's calls carry no ids (newer clients may send one): each call gets
    one, and a tool result answers the earliest unanswered call of its ``tool_name``."""
    out: list[Message] = []
    pending: list[ToolCall] = []
    for index, message in enumerate(messages):
        calls = tuple(
            ToolCall(
                call.id or f"call_{index}_{number}",
                call.function.name,
                json.dumps(call.function.arguments, ensure_ascii=False),
            )
            for number, call in enumerate(message.tool_calls or [])
        )
        pending += calls
        answered = _answered(pending, message) if message.role == "tool" else None
        out.append(
            Message(
                role=message.role,
                content=_content(index, message.content, message.images),
                name=message.tool_name if message.role == "tool" else None,
                tool_calls=calls,
                tool_call_id=answered,
                reasoning=message.thinking or None,
            )
        )
    return tuple(out)


def _answered(pending: list[ToolCall], message: OllamaMessage) -> str:
    if message.tool_call_id:
        return message.tool_call_id
    for call in pending:
        if message.tool_name in (None, call.name):
            pending.remove(call)
            return call.id
    return f"call_{message.tool_name or 'tool'}"


def _content(index: int, text: str, images: list[str] | None) -> tuple[ContentPart, ...]:
    parts: list[ContentPart] = [TextPart(text)] if text or not images else []
    for number, image in enumerate(images or []):
        parts.append(image_part(image, f"messages[{index}].images[{number}]"))
    return tuple(parts)


_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def image_part(data: str, param: str) -> OtherPart:
    """An Ollama image (base64) as the chat API's ``image_url`` part with a data URL: an
    OpenAI-compatible upstream takes it; text-only engines refuse it by name (400)."""
    try:
        head = base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=False)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("an image must be base64", param=param) from None
    mime = next((m for magic, m in _IMAGE_TYPES if head.startswith(magic)), "image/png")
    return OtherPart("image_url", {"image_url": {"url": f"data:{mime};base64,{data}"}})


# -- generate ------------------------------------------------------------------------------


def generate_request(body: OllamaGenerateRequest, model: str) -> GenerationRequest:
    """The core request for ``/api/generate`` (``prompt`` is not empty: that is a load):
    ``raw`` is the prompt as written, no template; otherwise ``system`` then the prompt as
    chat messages through the model's own chat template."""
    _refuse_generate_fields(body)
    if body.raw:
        return _generation(body, model, prompt=body.prompt)
    messages = [Message("system", (TextPart(body.system),))] if body.system else []
    images = body.images or []
    parts: list[ContentPart] = [TextPart(body.prompt)]
    parts += [image_part(image, f"images[{n}]") for n, image in enumerate(images)]
    messages.append(Message("user", tuple(parts)))
    return _generation(body, model, messages=tuple(messages))


def _refuse_generate_fields(body: OllamaGenerateRequest) -> None:
    refusals = (
        (
            bool(body.template),
            "template",
            "'template' (a Go template) is not supported: llmgate renders prompts with the "
            "model's own chat template; send raw: true with a prompt you formatted yourself",
        ),
        (bool(body.suffix), "suffix", "'suffix' (fill-in-the-middle) is not supported"),
        (
            bool(body.context),
            "context",
            "'context' (token-context continuation) is not supported: llmgate returns an empty "
            "context; send the conversation to /api/chat instead",
        ),
        (
            body.raw and bool(body.system),
            "system",
            "'system' is not applied to a raw prompt: put it in the prompt yourself",
        ),
        (
            body.raw and bool(body.images),
            "images",
            "'images' need the model's chat template: not with raw: true",
        ),
    )
    for refused, param, message in refusals:
        if refused:
            raise UnsupportedParameterError(message, param=param)


# -- shared --------------------------------------------------------------------------------


def _generation(body: OllamaGenerationFields, model: str, **fields: Any) -> GenerationRequest:
    options = body.options or OllamaOptions()
    return GenerationRequest(
        model=model,
        max_tokens=options.num_predict if (options.num_predict or 0) > 0 else None,
        max_tokens_fits_window=True,  # num_predict is a cap: Ollama never refuses it
        truncate_prompt=body.truncate is not False,  # Ollama's default: cut, not refuse
        num_ctx=options.num_ctx,
        sampling=sampling(options),
        stop=_stops(options.stop),
        constraint=constraint(body.format),
        reasoning=reasoning(body.think),
        **fields,
    )


def sampling(options: OllamaOptions) -> Sampling:
    """Ollama's sampling options in the core's terms. ``repeat_penalty`` 1 is no penalty."""
    repeat = options.repeat_penalty
    return Sampling(
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        min_p=options.min_p,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=None if repeat in (None, 1.0) else repeat,
        seed=options.seed,
    )


def _stops(stop: list[str] | str | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)


def constraint(value: str | dict[str, Any] | None) -> OutputConstraint | None:
    """``format``: "json" (any JSON object) or a JSON schema; "" or absent: none."""
    if value is None or value == "":
        return None
    if value == "json":
        return OutputConstraint("json_object")
    if isinstance(value, dict):
        return OutputConstraint("json_schema", value) if value else OutputConstraint("json_object")
    raise InvalidRequestError(
        f'invalid format: {json.dumps(value)}; expected "json" or a JSON schema object',
        param="format",
    )


def reasoning(think: ThinkValue | None) -> bool | None:
    """``think``: true or a level turns thinking on, false off; absent: the model's default."""
    return None if think is None else think is not False


def num_ctx(
    body: OllamaGenerationFields | OllamaEmbedRequest | OllamaEmbeddingsRequest,
) -> int | None:
    return body.options.num_ctx if body.options is not None else None


def check_num_ctx(requested: int | None, window: int | None, model: str) -> None:
    """``options.num_ctx`` may not ask for more than the model's window (below it, an
    in-process model's window stands: llmgate does not resize a loaded model per request; an
    Ollama upstream gets it, ``backends.upstream.ollama``)."""
    if requested is not None and window is not None and requested > window:
        raise InvalidRequestError(
            f"options.num_ctx {requested} is above the context window of model '{model}' "
            f"({window} tokens)",
            param="options.num_ctx",
        )


# -- embeddings ----------------------------------------------------------------------------


def embed_inputs(value: str | list[str]) -> tuple[str, ...]:
    """``/api/embed``'s ``input`` (empty: a load request, no inputs); an empty item is a 400."""
    items = [value] if isinstance(value, str) else value
    if isinstance(value, str) and not value:
        return ()
    _no_empty(items)
    return tuple(items)


def _no_empty(items: Iterable[str]) -> None:
    for index, item in enumerate(items):
        if not item:
            raise InvalidRequestError("an input must not be empty", param=f"input[{index}]")


def embedding_request(body: OllamaEmbedRequest, model: str) -> EmbeddingRequest:
    """The core request (no inputs: a load request). As in Ollama, an input longer than the
    model reads is cut to fit unless ``truncate`` is false (then it is a 400)."""
    inputs = embed_inputs(body.input)
    truncate = body.truncate is not False
    return EmbeddingRequest(model, inputs, dimensions=body.dimensions, truncate=truncate)
