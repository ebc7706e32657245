"""What Anthropic's Messages API checks in a request, checked the same way so that code tested
against llmgate works against Anthropic's API: stop sequences, the thinking budget, a final
assistant turn continued as the answer (prefill). The translation is
``gateway.anthropic_messages``.
"""

from __future__ import annotations

from backends.anthropic_types import ContentBlockParam, MessageParam, ThinkingParam
from backends.errors import InvalidRequestError


def stop_sequences(sequences: list[str] | None) -> tuple[str, ...]:
    """As Anthropic's API: each stop sequence holds something other than whitespace."""
    for index, sequence in enumerate(sequences or ()):
        if not sequence.strip():
            raise InvalidRequestError(
                "stop_sequences: each stop sequence must contain non-whitespace",
                param=f"stop_sequences[{index}]",
            )
    return tuple(sequences or ())


MIN_THINKING_BUDGET = 1024  # Anthropic's floor for thinking.budget_tokens


def check_thinking_budget(thinking: ThinkingParam | None, max_tokens: int | None) -> None:
    """As Anthropic's API: ``enabled`` thinking has a ``budget_tokens`` of at least 1,024,
    below ``max_tokens``. (llmgate does not enforce the budget: ``max_tokens`` bounds thinking
    and answer together.)"""
    if thinking is None or thinking.type != "enabled":
        return
    budget = thinking.budget_tokens
    if budget is None:
        raise InvalidRequestError(
            "thinking.enabled.budget_tokens: Field required", param="thinking.budget_tokens"
        )
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequestError(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}",
            param="thinking.budget_tokens",
        )
    if max_tokens is not None and max_tokens <= budget:
        raise InvalidRequestError(
            "`max_tokens` must be greater than `thinking.budget_tokens`", param="max_tokens"
        )


def check_prefill(index: int, message: MessageParam) -> None:
    """A final assistant message is the start of the answer, which the model continues
    (prefill): text (and thinking), not ending in whitespace, as Anthropic requires."""
    content = message.content
    blocks = [ContentBlockParam(type="text", text=content)] if isinstance(content, str) else content
    for number, block in enumerate(blocks):
        if block.type == "tool_use":
            raise InvalidRequestError(
                "a final assistant message is continued as text: it cannot hold a 'tool_use' block",
                param=f"messages[{index}].content[{number}]",
            )
    texts = [block.text for block in blocks if block.type == "text" and block.text]
    if texts and texts[-1] != texts[-1].rstrip():
        raise InvalidRequestError(
            "messages: final assistant content cannot end with trailing whitespace",
            param=f"messages[{index}].content",
        )
