"""Cutting a prompt to fit the window, for requests that ask for it (``truncate_prompt``: the
Ollama surface, whose clients expect a long chat to go on rather than fail).

As Ollama does: the oldest messages go first, whole (system messages stay, and the last turn
always does); the kept history starts at a user message, so templates that need roles to
alternate still render it. If the last turn alone is too long, or the prompt is raw, the
middle of the tokens goes (the first ``KEEP_HEAD`` stay, as Ollama's ``num_keep``). Unlike
Ollama, llmgate's engines do not shift the context while generating, so the cut also leaves
room for the answer (``answer_room``). Written once for both in-process engines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from backends.local.chat import Prompt
from backends.requests import GenerationRequest

log = logging.getLogger(__name__)

KEEP_HEAD = 4  # tokens kept from the start when the middle of a prompt is cut


def answer_room(request: GenerationRequest, window: int) -> int:
    """The tokens a cut prompt leaves for the answer: ``max_tokens`` when set, else a quarter
    of the window; at most half of it."""
    wanted = request.max_tokens if request.max_tokens is not None else window // 4
    return max(1, min(wanted, window // 2))


def fit_prompt(
    request: GenerationRequest, render: Callable[[GenerationRequest], Prompt], window: int
) -> Prompt:
    """``request``'s prompt (``render`` renders and tokenizes one), cut to fit ``window`` when
    the request allows it; otherwise as rendered (too long: the plan refuses it by name)."""
    prompt = render(request)
    budget = window - answer_room(request, window)
    if not request.truncate_prompt or len(prompt.tokens) <= budget:
        return prompt
    dropped = 0
    if request.prompt is None:
        dropped, prompt = _drop_oldest(request, render, budget, prompt)
    cut = max(len(prompt.tokens) - budget, 0)
    if cut:
        tokens = prompt.tokens
        prompt = replace(prompt, tokens=tokens[:KEEP_HEAD] + tokens[KEEP_HEAD + cut :])
    log.info(
        "model %s: prompt cut to fit its %d-token window: %d oldest messages and %d tokens "
        "left out",
        request.model,
        window,
        dropped,
        cut,
    )
    return prompt


def _drop_oldest(
    request: GenerationRequest,
    render: Callable[[GenerationRequest], Prompt],
    budget: int,
    whole: Prompt,
) -> tuple[int, Prompt]:
    """The history from the earliest user message on whose prompt fits ``budget`` (binary
    search: fewer messages never render longer), or the last turn alone; how many messages
    went, and the prompt."""
    messages = request.messages
    last = _last_turn(request)
    if last == 0:
        return 0, whole
    starts = [i for i in range(1, last) if messages[i].role == "user"] + [last]

    def kept(start: int) -> GenerationRequest:
        system = tuple(m for m in messages[:start] if m.role == "system")
        return replace(request, messages=system + messages[start:])

    low, high = 0, len(starts) - 1
    best = render(kept(starts[high]))
    best_start = starts[high]
    while low < high:  # the earliest start that fits, among starts[low:high]
        middle = (low + high) // 2
        prompt = render(kept(starts[middle]))
        if len(prompt.tokens) <= budget:
            best, best_start, high = prompt, starts[middle], middle
        else:
            low = middle + 1
    dropped = sum(1 for m in messages[:best_start] if m.role != "system")
    return dropped, best


def _last_turn(request: GenerationRequest) -> int:
    """Where the last turn starts: the last message, or for a continued assistant message
    (prefill) the user message it answers."""
    messages = request.messages
    last = len(messages) - 1
    if request.continue_final and last > 0 and messages[last - 1].role == "user":
        return last - 1
    return last
