"""Model output samples for tool-call and reasoning parser tests, as data.

Each ``OutputSample`` is text a model generated after its generation prompt, exactly as the
engine hands it over (special tokens written out as text, the final end-of-turn token left
out), with what a parser should make of it. The texts come from public sources named in
``source``: model documentation (real outputs), and the parser tests of vLLM
(``tests/tool_parsers/``, ``tests/reasoning/``), llama.cpp (``tests/test-chat.cpp``) and
Ollama (``tools/tools_test.go``), whose samples were taken from or modelled on real outputs.
A few are ``adapted`` (a source's text cut short as ``max_tokens`` would cut it, or its
arguments put into another family's wrapping); ``source`` says so.

Contract of the expectations:

- ``content`` and ``reasoning`` are compared after ``str.strip()``; ``None`` means nothing
  (empty after stripping).
- ``calls`` are ``(name, arguments)`` with the arguments decoded to a dict.
- ``malformed``: the text tries a call but is not a well-formed one (cut off, invalid JSON,
  text after the call, a missing closing tag). The raw text comes back as ``content``, whole,
  and there is no call: nothing the model wrote is lost.
- ``reasoning`` is expected where the family thinks: split the thinking off first, then read
  calls from the answer. ``opened_by_prompt``: the generation prompt already opened the
  thinking (DeepSeek-R1's ends with ``<think>\\n``), so the text starts inside it.
- ``disputed`` says where a well-known engine reads the text differently, so that a parser
  test can tell a deliberate choice from a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VLLM_HERMES = "vLLM tests/tool_parsers/test_hermes_tool_parser.py"
VLLM_LLAMA3 = "vLLM tests/tool_parsers/test_llama3_json_tool_parser.py"
VLLM_MISTRAL = "vLLM tests/tool_parsers/test_mistral_tool_parser.py (pre-v11 tokenizer)"
VLLM_QWEN3_THINK = "vLLM tests/reasoning/test_qwen3_reasoning_parser.py"
OLLAMA = "Ollama tools/tools_test.go TestParseToolCalls"
LLAMA_CPP = "llama.cpp tests/test-chat.cpp"
QWEN_DOCS = "Qwen docs, docs/source/framework/function_call.md (QwenLM/Qwen2.5 repository)"
META_DOCS = "Meta's Llama 3.1 prompt-format documentation, JSON based tool calling"


@dataclass(frozen=True)
class OutputSample:
    name: str
    format: str  # "hermes" | "llama3_json" | "mistral" | "think"
    family: str  # a name in tests/model_families.py
    raw: str
    content: str | None
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    reasoning: str | None = None
    malformed: bool = False
    opened_by_prompt: bool = False
    source: str = ""
    disputed: str | None = None
    kind: str = field(default="")  # what the sample exercises: single, parallel, ...


_QWEN_CALL_1 = (
    '<tool_call>\n{"name": "get_current_temperature", "arguments": '
    '{"location": "San Francisco, CA, USA"}}\n</tool_call>'
)
_QWEN_CALL_2 = (
    '<tool_call>\n{"name": "get_temperature_date", "arguments": '
    '{"location": "San Francisco, CA, USA", "date": "2024-10-01"}}\n</tool_call>'
)
_QWEN3_REASONING = (
    "Okay, the user is asking for the current temperature in San Francisco and the "
    "temperature for tomorrow. Let me check the available tools.\n\nFirst, there's the "
    "get_current_temperature function. It requires the location and optionally the unit. "
    "Since the user didn't specify the unit, I'll default to celsius. The location should be "
    '"San Francisco, State, Country". Wait, the example format is "City, State, Country", but '
    "San Francisco is a city in California, USA. So the location parameter would be "
    '"San Francisco, California, United States".\n\nThen, for tomorrow\'s temperature, the '
    "user mentioned the current date is 2024-09-30, so tomorrow would be 2024-10-01. The "
    "get_temperature_date function requires location, date, and unit. Again, using the same "
    'location and default unit. I need to format the date as "Year-Month-Day", which is '
    "2024-10-01.\n\nWait, the current date given is 2024-09-30. If today is September 30, then "
    'tomorrow is October 1st. So the date parameter for the second function call should be "'
    '2024-10-01".\n\nI should make two separate function calls: one for the current '
    "temperature and another for tomorrow's date. Let me structure the JSON for both tool "
    "calls accordingly."
)
_QWEN3_ANSWER_REASONING = (
    "Okay, the user asked for the current temperature in San Francisco and tomorrow's "
    "temperature. I called the get_current_temperature function for now and "
    "get_temperature_date for tomorrow. The responses came back with 26.1°C today and 25.9°C "
    "tomorrow. Let me present this info clearly.\n\nFirst, confirm the location to make sure "
    "there's no confusion. The current temp is 26.1°C, so I'll state that. Then, tomorrow's "
    "date is 2024-10-01, which is October 1st, so I'll mention the date in a user-friendly "
    "way. The temp drops slightly to 25.9°C. I should note the unit is Celsius as per the "
    "default. Keep the answer concise but informative. Maybe add a brief note about the "
    "slight decrease. Make sure the dates are correctly formatted and the temperatures are "
    "accurate based on the data provided."
)
_QWEN3_ANSWER = (
    "The current temperature in San Francisco, CA, USA is **26.1°C**.  \n\nFor tomorrow "
    "(2024-10-01), the temperature is projected to be **25.9°C**.  \n\nThere is a slight "
    "decrease in temperature expected from today to tomorrow."
)
_SF = {"location": "San Francisco, California, United States", "unit": "celsius"}
_SF_TOMORROW = {**_SF, "date": "2024-10-01"}
_OLLAMA_T1 = '{"name": "get_current_weather", "arguments": {"format":"fahrenheit","location":"San Francisco, CA"}}'  # noqa: E501
_OLLAMA_T2 = '{"name": "get_current_weather", "arguments": {"format":"celsius","location":"Toronto, Canada"}}'  # noqa: E501
_WEATHER_SF = {"format": "fahrenheit", "location": "San Francisco, CA"}
_WEATHER_TO = {"format": "celsius", "location": "Toronto, Canada"}
_TRAILING_DALLAS = (
    '[TOOL_CALLS] [{"name": "get_current_weather", "arguments":{"city": "Dallas", '
    '"state": "TX", "unit": "fahrenheit"}}]\nextra trailing data'
)

HERMES: tuple[OutputSample, ...] = (
    OutputSample(
        "hermes_single",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}\n</tool_call>',
        None,
        (("final_answer", {"trigger": True}),),
        source=f"{VLLM_HERMES}, bug 19056 (Qwen output)",
        kind="single",
    ),
    OutputSample(
        "hermes_parallel",
        "hermes",
        "qwen2.5",
        f"{_QWEN_CALL_1}\n{_QWEN_CALL_2}",
        None,
        (
            ("get_current_temperature", {"location": "San Francisco, CA, USA"}),
            ("get_temperature_date", {"location": "San Francisco, CA, USA", "date": "2024-10-01"}),
        ),
        source=f"{QWEN_DOCS}: Qwen2.5-7B-Instruct's output with Hugging Face transformers",
        kind="parallel",
    ),
    OutputSample(
        "hermes_text_before",
        "hermes",
        "qwen2.5",
        'Sure, let me check the weather.<tool_call>{"name": "get_weather", '
        '"arguments": {"city": "NYC"}}</tool_call>',
        "Sure, let me check the weather.",
        (("get_weather", {"city": "NYC"}),),
        source=f"{VLLM_HERMES}, content then tool call",
        kind="text_before",
    ),
    OutputSample(
        "hermes_no_call",
        "hermes",
        "qwen2.5",
        "The weather in San Francisco, CA is 70°F and in Toronto, Canada is 20°C.",
        "The weather in San Francisco, CA is 70°F and in Toronto, Canada is 20°C.",
        source=f"{OLLAMA}, qwen2.5 plain text response",
        kind="no_call",
    ),
    OutputSample(
        "hermes_nested_args",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "complexTool", "arguments": {"level1": {"level2": {"level3": '
        '{"level4": {"value": "deep"}}}}}}\n</tool_call>',
        None,
        (("complexTool", {"level1": {"level2": {"level3": {"level4": {"value": "deep"}}}}}),),
        source=f"adapted: {VLLM_LLAMA3} deeply nested arguments, in Hermes tags",
        kind="nested_json",
    ),
    OutputSample(
        "hermes_quotes_and_braces",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "parserTool", "arguments": {"text": "He said \\"Hello '
        '{world}\\"", "query": "test {value} [complex]"}}\n</tool_call>',
        None,
        (("parserTool", {"text": 'He said "Hello {world}"', "query": "test {value} [complex]"}),),
        source=f"adapted: {VLLM_LLAMA3} escaped quotes and brackets in strings, in Hermes tags",
        kind="quotes_braces",
    ),
    OutputSample(
        "hermes_unicode",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Z\\u00fcrich", '
        '"note": "東京 ☀ \\"}\\" done"}}\n</tool_call>',
        None,
        (("get_weather", {"city": "Zürich", "note": '東京 ☀ "}" done'}),),
        source="adapted: escaped and literal unicode and a '}' inside a string, Qwen's wrapping",
        kind="unicode",
    ),
    OutputSample(
        "hermes_arguments_as_string",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "get_db_config", "arguments": "{\\"param\\": '
        '\\"max_connections\\"}"}\n</tool_call>',
        None,
        (("get_db_config", {"param": "max_connections"}),),
        source=f"{VLLM_HERMES}, serialized arguments (Granite 4 writes them as a JSON string)",
        kind="arguments_string",
    ),
    OutputSample(
        "hermes_truncated",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Fran',
        '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Fran',
        malformed=True,
        source=f"adapted: {QWEN_DOCS} sample cut as max_tokens cuts it",
        kind="truncated",
    ),
    OutputSample(
        "hermes_invalid_json",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "invalidTool", "arguments": {invalid json}}\n</tool_call>',
        '<tool_call>\n{"name": "invalidTool", "arguments": {invalid json}}\n</tool_call>',
        malformed=True,
        source=f"adapted: {VLLM_LLAMA3} invalid JSON, in Hermes tags",
        kind="invalid_json",
    ),
    OutputSample(
        "hermes_missing_brace",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}',
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}',
        malformed=True,
        source=f"{VLLM_HERMES}, invalid JSON (missing closing brace)",
        kind="truncated",
    ),
    OutputSample(
        "hermes_text_after",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "NYC"}}\n</tool_call>'
        " some tokens after call",
        "some tokens after call",
        (("get_weather", {"city": "NYC"}),),
        source=f"adapted: {OLLAMA}, qwen2.5 tool calls with prefix and trailing text",
        disputed=(
            "Ollama returns the call and drops the trailing text; llmgate keeps both: the "
            "complete call, and the text after it as content"
        ),
        kind="text_after",
    ),
    OutputSample(
        "hermes_missing_close_tag",
        "hermes",
        "qwen2.5",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}',
        None,
        (("final_answer", {"trigger": True}),),
        source=f"{VLLM_HERMES}, tool call until eos",
        disputed=(
            "read as a call, as vLLM's Hermes2ProToolParser does: the JSON is complete and the "
            "output ended, so only the closing tag is missing"
        ),
        kind="missing_close",
    ),
    OutputSample(
        "qwen3_thinking_then_parallel_calls",
        "hermes",
        "qwen3",
        f"<think>\n{_QWEN3_REASONING}\n</think>\n\n"
        '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San '
        'Francisco, California, United States", "unit": "celsius"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "San '
        'Francisco, California, United States", "date": "2024-10-01", "unit": "celsius"}}\n'
        "</tool_call>",
        None,
        (("get_current_temperature", _SF), ("get_temperature_date", _SF_TOMORROW)),
        reasoning=_QWEN3_REASONING,
        source=(
            f"{QWEN_DOCS}: Qwen3-8B in think mode, as parsed by Qwen-Agent; the text put back "
            "in the Hermes form Qwen3's template writes"
        ),
        kind="parallel",
    ),
    OutputSample(
        "qwen3_no_think_call",
        "hermes",
        "qwen3",
        _QWEN_CALL_1,
        None,
        (("get_current_temperature", {"location": "San Francisco, CA, USA"}),),
        source=f"{QWEN_DOCS}: Qwen3-8B with enable_thinking false (the prompt closes the think)",
        kind="single",
    ),
)

LLAMA3_JSON: tuple[OutputSample, ...] = (
    OutputSample(
        "llama3_single",
        "llama3_json",
        "llama3.1",
        '{"name": "get_current_conditions", "parameters": {"location": "Menlo Park, CA", '
        '"unit": "Fahrenheit"}}',
        None,
        (("get_current_conditions", {"location": "Menlo Park, CA", "unit": "Fahrenheit"}),),
        source=META_DOCS,
        kind="single",
    ),
    OutputSample(
        "llama3_python_tag",
        "llama3_json",
        "llama3.1",
        '<|python_tag|>{\n    "type": "function",\n    "name": "trending_songs",\n'
        '    "parameters": {\n        "n": "10",\n        "genre": "all"\n    }\n}',
        None,
        (("trending_songs", {"n": "10", "genre": "all"}),),
        source=f"{META_DOCS} (ends with <|eom_id|>, the stop token, left out)",
        kind="single",
    ),
    OutputSample(
        "llama3_parallel",
        "llama3_json",
        "llama3.1",
        '{"name": "searchTool", "parameters": {"query": "test1"}}; '
        '{"name": "getOpenIncidentsTool", "parameters": {}}; '
        '{"name": "searchTool", "parameters": {"query": "test2"}}',
        None,
        (
            ("searchTool", {"query": "test1"}),
            ("getOpenIncidentsTool", {}),
            ("searchTool", {"query": "test2"}),
        ),
        source=f"{VLLM_LLAMA3}, multiple JSON separated by semicolons",
        kind="parallel",
    ),
    OutputSample(
        "llama3_arguments_key",
        "llama3_json",
        "llama3.1",
        '{"name": "searchTool", "arguments": {"query": "test"}}',
        None,
        (("searchTool", {"query": "test"}),),
        source=f"{VLLM_LLAMA3}, 'arguments' instead of 'parameters'",
        kind="single",
    ),
    OutputSample(
        "llama3_text_around_json",
        "llama3_json",
        "llama3.1",
        'Here is the result: {"name": "getOpenIncidentsTool", "parameters": {}} '
        "Would you like to know more?",
        'Here is the result: {"name": "getOpenIncidentsTool", "parameters": {}} '
        "Would you like to know more?",
        source=f"{VLLM_LLAMA3}, simple tool call",
        disputed=(
            "vLLM's Llama3JsonToolParser finds the call inside the prose and drops the text; "
            "here the answer is prose (Llama 3.1 calls are a whole answer of JSON), kept whole"
        ),
        kind="text_before",
    ),
    OutputSample(
        "llama3_no_call",
        "llama3_json",
        "llama3.1",
        "This is just some text without any tool calls",
        "This is just some text without any tool calls",
        source=f"{VLLM_LLAMA3}, no JSON",
        kind="no_call",
    ),
    OutputSample(
        "llama3_nested_args",
        "llama3_json",
        "llama3.1",
        '{"name": "simpleTool", "parameters": {"value": "test"}}; {"name": "complexTool", '
        '"parameters": {"config": {"database": {"connection": {"pool": {"size": 10}}}}}}',
        None,
        (
            ("simpleTool", {"value": "test"}),
            ("complexTool", {"config": {"database": {"connection": {"pool": {"size": 10}}}}}),
        ),
        source=f"{VLLM_LLAMA3}, multiple with deep nesting",
        kind="nested_json",
    ),
    OutputSample(
        "llama3_quotes_and_braces",
        "llama3_json",
        "llama3.1",
        '{"name": "parserTool", "parameters": {"text": "He said \\"Hello {world}\\""}}',
        None,
        (("parserTool", {"text": 'He said "Hello {world}"'}),),
        source=f"{VLLM_LLAMA3}, escaped quotes in nested JSON",
        kind="quotes_braces",
    ),
    OutputSample(
        "llama3_brackets_in_strings",
        "llama3_json",
        "llama3.1",
        '{"name": "searchTool", "parameters": {"query": "test {value} [complex]",'
        '"nested": {"inner": "more {brackets}"}}}',
        None,
        (
            (
                "searchTool",
                {"query": "test {value} [complex]", "nested": {"inner": "more {brackets}"}},
            ),
        ),
        source=f"{VLLM_LLAMA3}, quotes and brackets in string",
        kind="quotes_braces",
    ),
    OutputSample(
        "llama3_unicode",
        "llama3_json",
        "llama3.1",
        '{"name": "get_weather", "parameters": {"city": "Zürich", "n": 2}}',
        None,
        (("get_weather", {"city": "Zürich", "n": 2}),),
        source="adapted: a Llama 3.x template render of a call with unicode arguments",
        kind="unicode",
    ),
    OutputSample(
        "llama3_truncated",
        "llama3_json",
        "llama3.1",
        '{"name": "get_current_conditions", "parameters": {"location": "Menlo Park, CA", '
        '"unit": "Fahr',
        '{"name": "get_current_conditions", "parameters": {"location": "Menlo Park, CA", '
        '"unit": "Fahr',
        malformed=True,
        source=f"adapted: {META_DOCS} sample cut as max_tokens cuts it",
        kind="truncated",
    ),
    OutputSample(
        "llama3_invalid_json",
        "llama3_json",
        "llama3.1",
        '{"name": "invalidTool", "parameters": {invalid json}',
        '{"name": "invalidTool", "parameters": {invalid json}',
        malformed=True,
        source=f"{VLLM_LLAMA3}, invalid JSON",
        kind="invalid_json",
    ),
    OutputSample(
        "llama3_missing_name",
        "llama3_json",
        "llama3.1",
        '{"parameters": {}}',
        '{"parameters": {}}',
        malformed=True,
        source=f"{VLLM_LLAMA3}, missing name key",
        kind="invalid_json",
    ),
    OutputSample(
        "llama3_text_after",
        "llama3_json",
        "llama3.1",
        '{"name": "searchTool", "parameters": {"query": "test"}} I used {searchTool} for this.',
        '{"name": "searchTool", "parameters": {"query": "test"}} I used {searchTool} for this.',
        malformed=True,
        source=f"{VLLM_LLAMA3}, brace in trailing text",
        disputed="vLLM's Llama3JsonToolParser returns the call and drops the trailing text",
        kind="text_after",
    ),
)

MISTRAL: tuple[OutputSample, ...] = (
    OutputSample(
        "mistral_single_with_id",
        "mistral",
        "mistral",
        '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]',
        None,
        (("special_function", {"arg1": 1}),),
        source=f"{LLAMA_CPP}, Mistral Nemo template (calls carry 9-character ids)",
        kind="single",
    ),
    OutputSample(
        "mistral_single",
        "mistral",
        "mistral",
        '[TOOL_CALLS][{"name": "add", "arguments":{"a": 3.5, "b": 4}}]',
        None,
        (("add", {"a": 3.5, "b": 4}),),
        source=f"{VLLM_MISTRAL}, single_tool_add",
        kind="single",
    ),
    OutputSample(
        "mistral_parallel",
        "mistral",
        "mistral",
        f"[TOOL_CALLS]  [{_OLLAMA_T1},{_OLLAMA_T2}]",
        None,
        (("get_current_weather", _WEATHER_SF), ("get_current_weather", _WEATHER_TO)),
        source=f"{OLLAMA}, mistral valid json with tool calls prefix",
        kind="parallel",
    ),
    OutputSample(
        "mistral_text_before",
        "mistral",
        "mistral",
        'Bleh[TOOL_CALLS][{"arguments": {"arg1": 1}, "name": "special_function", '
        '"id": "123456789"}]',
        "Bleh",
        (("special_function", {"arg1": 1}),),
        source=f"{LLAMA_CPP}, Mistral Nemo parse test with content before the call",
        kind="text_before",
    ),
    OutputSample(
        "mistral_no_call",
        "mistral",
        "mistral",
        "This is a test",
        "This is a test",
        source=f"{VLLM_MISTRAL}, no tools",
        kind="no_call",
    ),
    OutputSample(
        "mistral_json_without_trigger",
        "mistral",
        "mistral",
        "I'm not aware of that information. However, I can suggest searching for the weather "
        'using the "get_current_weather" function:\n\n'
        f"[{_OLLAMA_T1},{_OLLAMA_T2}]",
        "I'm not aware of that information. However, I can suggest searching for the weather "
        'using the "get_current_weather" function:\n\n'
        f"[{_OLLAMA_T1},{_OLLAMA_T2}]",
        source=f"{OLLAMA}, mistral invalid tool call with explanatory text, no prefix",
        kind="no_call",
    ),
    OutputSample(
        "mistral_name_inside_arguments",
        "mistral",
        "mistral",
        '[TOOL_CALLS] [{"arguments":{"name": "John Doe"}, "name": "get_age"}]',
        None,
        (("get_age", {"name": "John Doe"}),),
        source=f"{VLLM_MISTRAL}, argument_before_name_and_name_in_argument",
        kind="nested_json",
    ),
    OutputSample(
        "mistral_quotes_unicode_braces",
        "mistral",
        "mistral",
        '[TOOL_CALLS][{"name": "search", "arguments": {"query": "café \\"best\\" }", '
        '"filters": {"tags": ["a", "b"], "max": 3}}, "id": "a1B2c3D4e"}]',
        None,
        (("search", {"query": 'café "best" }', "filters": {"tags": ["a", "b"], "max": 3}}),),
        source="adapted: quotes, unicode and a '}' inside a string, in Mistral Nemo's wrapping",
        kind="quotes_braces",
    ),
    OutputSample(
        "mistral_truncated",
        "mistral",
        "mistral",
        '[TOOL_CALLS]  [{"name": "get_current_weather", "arguments": '
        '{"format":"fahrenheit","location":"San Francisco, ',
        '[TOOL_CALLS]  [{"name": "get_current_weather", "arguments": '
        '{"format":"fahrenheit","location":"San Francisco, ',
        malformed=True,
        source=f"{OLLAMA}, mistral incomplete json with tool calls prefix",
        kind="truncated",
    ),
    OutputSample(
        "mistral_invalid_json",
        "mistral",
        "mistral",
        f'[TOOL_CALLS]  [{_OLLAMA_T1},{{"name": "get_curren}}]',
        f'[TOOL_CALLS]  [{_OLLAMA_T1},{{"name": "get_curren}}]',
        malformed=True,
        source=f"{OLLAMA}, mistral malformed json with tool calls prefix",
        disputed="Ollama recovers the first, well-formed call",
        kind="invalid_json",
    ),
    OutputSample(
        "mistral_not_json",
        "mistral",
        "mistral",
        "[TOOL_CALLS] not json at all",
        "[TOOL_CALLS] not json at all",
        malformed=True,
        source=f"{VLLM_MISTRAL}, regex fallback fails",
        disputed="vLLM returns the text after [TOOL_CALLS] as content, dropping the marker",
        kind="invalid_json",
    ),
    OutputSample(
        "mistral_text_after",
        "mistral",
        "mistral",
        _TRAILING_DALLAS,
        _TRAILING_DALLAS,
        malformed=True,
        source=f"{VLLM_MISTRAL}, trailing_data_after_json",
        disputed="vLLM returns the call and drops the trailing text",
        kind="text_after",
    ),
    OutputSample(
        "mistral_missing_close_bracket",
        "mistral",
        "mistral",
        '[TOOL_CALLS][{"name": "add", "arguments":{"a": 3.5, "b": 4}}',
        '[TOOL_CALLS][{"name": "add", "arguments":{"a": 3.5, "b": 4}}',
        malformed=True,
        source=f"adapted: {VLLM_MISTRAL} single_tool_add without its closing ']'",
        kind="missing_close",
    ),
)

THINK: tuple[OutputSample, ...] = (
    OutputSample(
        "think_then_answer",
        "think",
        "qwen3",
        f"<think>\n{_QWEN3_ANSWER_REASONING}\n</think>\n\n{_QWEN3_ANSWER}",
        _QWEN3_ANSWER,
        reasoning=_QWEN3_ANSWER_REASONING,
        source=f"{QWEN_DOCS}: Qwen3-8B's final answer in think mode (Qwen-Agent's parse, put back)",
        kind="reasoning_then_answer",
    ),
    OutputSample(
        "think_multiline",
        "think",
        "qwen3",
        "<think>This is a reasoning\nsection</think>This is the rest\nThat",
        "This is the rest\nThat",
        reasoning="This is a reasoning\nsection",
        source=f"{VLLM_QWEN3_THINK}, multiline reasoning",
        kind="reasoning_then_answer",
    ),
    OutputSample(
        "think_truncated",
        "think",
        "qwen3",
        "<think>This is a reasoning section",
        None,
        reasoning="This is a reasoning section",
        source=f"{VLLM_QWEN3_THINK}, only open tag (cut off mid-thought)",
        kind="reasoning_only",
    ),
    OutputSample(
        "think_empty",
        "think",
        "qwen3",
        "<think>\n\n</think>\n\nHello, world!\nWhat's up?",
        "Hello, world!\nWhat's up?",
        source=(
            "Qwen3 model card (with /no_think the model writes an empty think block "
            f"'<think>\\n\\n</think>\\n\\n'); answer text from {LLAMA_CPP}"
        ),
        kind="empty_thinking",
    ),
    OutputSample(
        "think_plain_when_disabled",
        "think",
        "qwen3",
        "This is plain content",
        "This is plain content",
        source=f"{VLLM_QWEN3_THINK}, thinking disabled (enable_thinking false)",
        disputed=(
            "with thinking enabled vLLM's qwen3 parser reads tagless output as reasoning "
            "cut off; the prompt decides (Qwen3 writes <think> itself when it thinks)"
        ),
        kind="no_thinking",
    ),
    OutputSample(
        "think_r1_opened_by_prompt",
        "think",
        "deepseek-r1",
        "I'm\nthinking</think>Hello, world!\nWhat's up?",
        "Hello, world!\nWhat's up?",
        reasoning="I'm\nthinking",
        opened_by_prompt=True,
        source=f"{LLAMA_CPP}, DeepSeek R1 with thinking forced open by the template",
        kind="starts_inside_thinking",
    ),
    OutputSample(
        "think_r1_truncated",
        "think",
        "deepseek-r1",
        "This is a reasoning section",
        None,
        reasoning="This is a reasoning section",
        opened_by_prompt=True,
        source=f"{VLLM_QWEN3_THINK}, truncated without start token (<think> in the prompt)",
        kind="reasoning_only",
    ),
    OutputSample(
        "think_r1_empty",
        "think",
        "deepseek-r1",
        "\n</think>\n\nHello, world!\nWhat's up?",
        "Hello, world!\nWhat's up?",
        opened_by_prompt=True,
        source=(
            "DeepSeek-R1 README (the models may bypass thinking, writing '<think>\\n\\n</think>'"
            "; the prompt already holds '<think>\\n'); answer text from llama.cpp test-chat.cpp"
        ),
        kind="empty_thinking",
    ),
)

SAMPLES: tuple[OutputSample, ...] = (*HERMES, *LLAMA3_JSON, *MISTRAL, *THINK)


def samples(format: str) -> tuple[OutputSample, ...]:
    found = tuple(s for s in SAMPLES if s.format == format)
    if not found:
        known = sorted({s.format for s in SAMPLES})
        raise KeyError(f"no samples of format {format!r}; formats: {', '.join(known)}")
    return found
