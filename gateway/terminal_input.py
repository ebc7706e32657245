"""The line reader of ``llmgate chat``: ``prompt_toolkit`` with history, completion and Ctrl-C.

History persists across sessions in ``$LLMGATE_CHAT_HISTORY`` (else the XDG data folder);
Tab completes commands, ``/set`` keys and model names; Esc then Enter inserts a newline. When
stdin is not a terminal the reader is plain ``input``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.ctrl_c import CtrlC

COMMANDS = ["/model", "/models", "/system", "/set", "/reset", "/stats", "/help", "/exit"]
SETTINGS = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int}


def history_path() -> Path:
    explicit = os.environ.get("LLMGATE_CHAT_HISTORY")
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "llmgate" / "chat_history"


def completions(text: str, models: list[str]) -> Iterator[tuple[str, str]]:
    """``(completion, the word it replaces)`` for the text before the cursor."""
    if text.startswith("/model "):
        word = text[len("/model ") :]
        yield from ((name, word) for name in models if name.startswith(word))
    elif text.startswith("/set ") and " " not in text[5:]:
        word = text[5:]
        yield from ((key, word) for key in SETTINGS if key.startswith(word))
    elif text.startswith("/") and " " not in text:
        yield from ((command, text) for command in COMMANDS if command.startswith(text))


def line_reader(models: Callable[[], list[str]], ctrl_c: CtrlC) -> Callable[[str], str]:
    """A ``read(prompt) -> line`` that raises ``KeyboardInterrupt`` on Ctrl-C at an empty line
    and ``EOFError`` on Ctrl-D; ``models()`` gives the names to complete after ``/model``."""
    if not sys.stdin.isatty():
        return input
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.key_binding import KeyBindings

    class ChatCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterator[Completion]:
            for completion, word in completions(document.text_before_cursor, models()):
                yield Completion(completion, start_position=-len(word))

    keys = KeyBindings()

    @keys.add("c-c")
    def _(event: Any) -> None:
        buffer = event.app.current_buffer
        if buffer.text:
            buffer.reset()
        elif event.app.future is not None and event.app.future.done():
            ctrl_c.held = True  # a second Ctrl-C in the same read: the next one
        else:
            event.app.exit(exception=KeyboardInterrupt)

    @keys.add("escape", "enter")
    def _(event: Any) -> None:
        event.app.current_buffer.insert_text("\n")

    session: Any = PromptSession(
        history=_history(),
        completer=ChatCompleter(),
        complete_while_typing=False,  # Tab completes (a unique name at once)
        key_bindings=keys,
    )

    def read(prompt: str) -> str:
        # A Ctrl-C held while prompt_toolkit set up (its SIGINT handler, which restores
        # CtrlC's afterwards, is in place from here on) ends this prompt as if typed.
        def pre_run() -> None:
            if ctrl_c.held:
                ctrl_c.held = False
                session.app.exit(exception=KeyboardInterrupt)

        return str(session.prompt(prompt, pre_run=pre_run))

    return read


def _history() -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    try:
        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()  # an unwritable home: history for this session only
