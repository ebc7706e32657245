"""Every real model output sample of tests/tool_call_samples.py through the output reader of
the in-process engines, whole and streamed in small pieces: calls, content, reasoning, and
malformed calls coming back whole as content (never lost, never a crash)."""

from __future__ import annotations

import json

import pytest

from backends.events import ReasoningDelta, TextDelta, ToolCallDelta
from backends.local.output import ChoiceOutput, OutputSpec
from backends.local.reasoning import FORMATS as REASONING
from backends.local.tool_formats import FORMATS as TOOLS
from tests.model_families import FAMILIES
from tests.tool_call_samples import SAMPLES, OutputSample


def spec_for(sample: OutputSample) -> OutputSpec:
    family = FAMILIES[sample.family]
    reasoning = family.reasoning_format or ("think" if sample.format == "think" else None)
    tools = sample.format if sample.format in TOOLS else family.tool_format
    return OutputSpec(
        reasoning=REASONING[reasoning] if reasoning else None,
        reasoning_open=sample.opened_by_prompt,
        tools=TOOLS[tools] if tools else None,
    )


def read(sample: OutputSample, chunk: int):
    output = ChoiceOutput(0, (), 1_000_000, False, spec=spec_for(sample))
    events = []
    for start in range(0, len(sample.raw), chunk):
        events += output.token(sample.raw[start : start + chunk])
    events += output.token(None)
    calls: dict[int, list[ToolCallDelta]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.setdefault(event.call, []).append(event)
    content = "".join(e.text for e in events if isinstance(e, TextDelta)).strip() or None
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta)).strip() or None
    parsed = tuple(
        (deltas[0].name, json.loads("".join(d.arguments for d in deltas)))
        for _, deltas in sorted(calls.items())
    )
    return content, reasoning, parsed, output.reason


@pytest.mark.parametrize("chunk", [1, 3, 1_000_000])
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample(sample: OutputSample, chunk: int):
    content, reasoning, calls, reason = read(sample, chunk)
    assert calls == sample.calls
    assert content == (sample.content.strip() or None if sample.content else None)
    assert reasoning == (sample.reasoning.strip() or None if sample.reasoning else None)
    assert reason == ("tool_calls" if sample.calls else "stop")
    if sample.malformed:
        assert content is not None and content in sample.raw  # the model's text, kept


def test_the_corpus_covers_every_format_and_malformed_cases():
    formats = {s.format for s in SAMPLES}
    assert formats == {"hermes", "llama3_json", "mistral", "think"}
    for fmt in ("hermes", "llama3_json", "mistral"):
        assert any(s.malformed for s in SAMPLES if s.format == fmt), fmt
        assert any(len(s.calls) > 1 for s in SAMPLES if s.format == fmt), fmt
