"""The model families that tool-calling and reasoning tests stand tiny models in for.

A ``Family`` names a real family's chat template (``tests/templates/<name>.jinja``, the
template the family ships with) and the tokens that template and the family's tool-call and
reasoning formats write: each one ``special`` (a control token: special in the Hugging Face
tokenizer, CONTROL in a GGUF) or not (an added plain token: ``special: false`` in the Hugging
Face tokenizer, USER_DEFINED in a GGUF), as in the real tokenizer. ``tests/tiny_hf.py`` and
``tests/tiny_gguf.py`` put these tokens first in their vocabularies, in this order, so a
token's id is its index in ``Family.tokens`` in both engines.

The token lists are the subset of each real vocabulary that the template and the formats use
(vision and fill-in-the-middle tokens are left out); the flags come from the families'
``tokenizer_config.json`` (``added_tokens_decoder``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class FamilyToken:
    text: str
    special: bool  # a control token; False: an added token that decodes like text


@dataclass(frozen=True)
class Family:
    """One model family: its template, its tokens, and which of them end a turn.

    ``eos`` is the tokenizer's eos token; ``eog`` every token that ends generation (eos
    first), as in the family's ``generation_config.json``; ``pad`` its pad token, if any.
    ``eot``/``eom`` are the tokens a GGUF names (end of turn, end of message after a tool
    call); the ``chatml`` default names none, as before families existed. ``markers`` are
    the tokens a rendered prompt or the family's output formats contain, which must be one
    token each. ``tool_format``/``reasoning_format`` name the output formats
    (``backends/local/tool_formats.py``, ``backends/local/reasoning.py``).
    """

    name: str
    template_file: str | None
    tokens: tuple[FamilyToken, ...]
    bos: str | None
    eos: str
    eog: tuple[str, ...]
    add_bos: bool
    markers: tuple[str, ...]
    pad: str | None = None
    eot: str | None = None
    eom: str | None = None
    tool_format: str | None = None
    reasoning_format: str | None = None
    inline_template: str | None = None

    @cached_property
    def chat_template(self) -> str:
        if self.inline_template is not None:
            return self.inline_template
        return (TEMPLATES / str(self.template_file)).read_text(encoding="utf-8")

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(t.text for t in self.tokens)

    def token_id(self, text: str) -> int:
        """The id ``text`` has in both tiny builders' vocabularies."""
        try:
            return self.texts.index(text)
        except ValueError:
            raise KeyError(
                f"{text!r} is not a token of family {self.name!r}; its tokens: {self.texts}"
            ) from None

    def is_special(self, text: str) -> bool:
        return self.tokens[self.token_id(text)].special


def _tokens(*pairs: tuple[str, bool]) -> tuple[FamilyToken, ...]:
    return tuple(FamilyToken(text, special) for text, special in pairs)


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5's added tokens as they stand in its tokenizer_config.json (ids 151643...).
_QWEN_CHATML = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True))
_HERMES = (("<tool_call>", False), ("</tool_call>", False))

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="chatml",
            template_file=None,
            inline_template=CHATML_TEMPLATE,
            tokens=_tokens(*_QWEN_CHATML),
            bos="<|endoftext|>",
            eos="<|im_end|>",
            eog=("<|im_end|>",),
            add_bos=False,
            markers=("<|im_start|>", "<|im_end|>"),
            pad="<|endoftext|>",
        ),
        Family(
            name="qwen2.5",
            template_file="qwen2.5.jinja",
            tokens=_tokens(*_QWEN_CHATML, *_HERMES),
            bos=None,
            eos="<|im_end|>",
            eog=("<|im_end|>", "<|endoftext|>"),
            add_bos=False,
            markers=("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"),
            pad="<|endoftext|>",
            eot="<|im_end|>",
            tool_format="hermes",
        ),
        Family(
            name="qwen3",
            template_file="qwen3.jinja",
            tokens=_tokens(
                *_QWEN_CHATML,
                *_HERMES,
                ("<tool_response>", False),
                ("</tool_response>", False),
                ("<think>", False),
                ("</think>", False),
            ),
            bos=None,
            eos="<|im_end|>",
            eog=("<|im_end|>", "<|endoftext|>"),
            add_bos=False,
            markers=(
                "<|im_start|>",
                "<|im_end|>",
                "<tool_call>",
                "</tool_call>",
                "<tool_response>",
                "</tool_response>",
                "<think>",
                "</think>",
            ),
            pad="<|endoftext|>",
            eot="<|im_end|>",
            tool_format="hermes",
            reasoning_format="think",
        ),
        Family(
            name="llama3.1",
            template_file="llama3.1.jinja",
            tokens=_tokens(
                ("<|begin_of_text|>", True),
                ("<|end_of_text|>", True),
                ("<|finetune_right_pad_id|>", True),
                ("<|start_header_id|>", True),
                ("<|end_header_id|>", True),
                ("<|eom_id|>", True),
                ("<|eot_id|>", True),
                ("<|python_tag|>", True),
            ),
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            eog=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
            add_bos=True,
            markers=(
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|eom_id|>",
                "<|python_tag|>",
            ),
            eot="<|eot_id|>",
            eom="<|eom_id|>",
            tool_format="llama3_json",
        ),
        Family(
            # Mistral-Nemo-Instruct-2407 (Tekken): ids 0-9 as in its tokenizer.
            name="mistral",
            template_file="mistral.jinja",
            tokens=_tokens(
                ("<unk>", True),
                ("<s>", True),
                ("</s>", True),
                ("[INST]", True),
                ("[/INST]", True),
                ("[AVAILABLE_TOOLS]", True),
                ("[/AVAILABLE_TOOLS]", True),
                ("[TOOL_RESULTS]", True),
                ("[/TOOL_RESULTS]", True),
                ("[TOOL_CALLS]", True),
            ),
            bos="<s>",
            eos="</s>",
            eog=("</s>",),
            add_bos=True,
            markers=(
                "<s>",
                "</s>",
                "[INST]",
                "[/INST]",
                "[AVAILABLE_TOOLS]",
                "[/AVAILABLE_TOOLS]",
                "[TOOL_RESULTS]",
                "[/TOOL_RESULTS]",
                "[TOOL_CALLS]",
            ),
            tool_format="mistral",
        ),
        Family(
            # DeepSeek-R1-Distill-Qwen: Qwen2.5's vocabulary with DeepSeek's chat tokens;
            # <｜User｜>, <｜Assistant｜> and the think tags are added non-special tokens.
            name="deepseek-r1",
            template_file="deepseek-r1.jinja",
            tokens=_tokens(
                ("<｜end▁of▁sentence｜>", True),
                ("<｜User｜>", False),
                ("<｜Assistant｜>", False),
                ("<｜begin▁of▁sentence｜>", True),
                ("<|EOT|>", False),
                ("<think>", False),
                ("</think>", False),
            ),
            bos="<｜begin▁of▁sentence｜>",
            eos="<｜end▁of▁sentence｜>",
            eog=("<｜end▁of▁sentence｜>",),
            add_bos=True,
            markers=(
                "<｜begin▁of▁sentence｜>",
                "<｜User｜>",
                "<｜Assistant｜>",
                "<think>",
                "</think>",
                "<｜end▁of▁sentence｜>",
            ),
            pad="<｜end▁of▁sentence｜>",
            reasoning_format="think",
        ),
    )
}

TOOL_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.tool_format is not None)


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no model family {name!r}; known: {', '.join(FAMILIES)}") from None
