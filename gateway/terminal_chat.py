"""``llmgate chat``: a terminal chat against a running llmgate (or any OpenAI-compatible server).

Line editing, history across sessions and completion come from ``prompt_toolkit``; colours
from ``rich``. Ctrl-C while an answer streams stops that answer (the request is closed, so the
engine stops) and returns to the prompt; Ctrl-C at an empty prompt twice, or Ctrl-D, exits.
Commands: ``/model NAME``, ``/system TEXT``, ``/set KEY VALUE``, ``/reset``, ``/stats``,
``/help``, ``/exit``. ``\"\"\"`` starts and ends a multi-line message (as in ``ollama run``),
and Esc then Enter inserts a newline. Exit codes: 0 done, 1 server unreachable, 2 bad model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console

from gateway.chat_client import ChatClient, ChatError, is_chat_model, printable
from gateway.ctrl_c import CtrlC
from gateway.terminal_input import SETTINGS, line_reader

HELP = """\
/model NAME        switch model (Tab completes names)   /models   list models
/system TEXT       set the system prompt (/system alone clears it)
/set KEY VALUE     temperature, top_p, top_k, max_tokens, seed (/set alone shows them)
/reset             forget this conversation              /stats    usage after each answer
/exit              quit (also Ctrl-D, or Ctrl-C twice at an empty prompt)
\"\"\" ... \"\"\"         a multi-line message; Esc then Enter also starts a new line
Ctrl-C while an answer streams stops it."""


@dataclass
class Answer:
    text: str = ""
    reasoning: str = ""
    usage: dict[str, Any] | None = None
    started: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None
    stopped: bool = False

    def stats(self) -> str:
        parts = []
        tokens = (self.usage or {}).get("completion_tokens")
        if tokens is not None:
            parts.append(f"{tokens} tokens")
        if self.first is not None:
            parts.append(f"first token {self.first - self.started:.2f} s")
        first, last = self.first, self.last
        if tokens and tokens > 1 and first is not None and last is not None and last > first:
            parts.append(f"{(tokens - 1) / (last - first):.1f} tok/s")
        return " · ".join(parts)


class TerminalChat:
    def __init__(
        self,
        client: ChatClient,
        model: str,
        system: str | None,
        max_tokens: int,
        console: Console,
        read_line: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.settings: dict[str, float | int] = {"max_tokens": max_tokens}
        self.history: list[dict[str, str]] = []
        # per model: the oldest exchanges of ``history`` left out of requests, to fit its window
        self.left_out: dict[str, int] = {}
        self.show_stats = False
        self.console = console
        self.models: list[str] = []
        self.ctrl_c = CtrlC()
        self._read_line = read_line or line_reader(lambda: self.models, self.ctrl_c)

    # -- input ---------------------------------------------------------------------------

    def _read_message(self) -> str:
        """One message: a line, or a \"\"\"-block spanning several."""
        self.ctrl_c.raise_held()
        line = self._read_line(">>> ")
        if not line.lstrip().startswith('"""'):
            return line.strip()
        lines = [line.lstrip()[3:]]
        while not lines[-1].rstrip().endswith('"""'):
            self.ctrl_c.raise_held()
            lines.append(self._read_line("... "))
        lines[-1] = lines[-1].rstrip()[:-3]
        return "\n".join(lines).strip()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        self.ctrl_c.install()
        try:
            return self._run()
        finally:
            self.ctrl_c.uninstall()

    def _run(self) -> int:
        try:
            with self.ctrl_c.live():
                self.models = self.client.models()
                known = self.model in self.models or self._alias_ok(self.model)
        except ChatError as exc:
            self.console.print(f"[red]llmgate: {exc}[/red]", highlight=False)
            return 1
        if not known:
            self._unknown_model(self.model)
            return 2
        self.console.print(
            f"chatting with [bold]{self.model}[/bold] at {self.client.url} — /help for commands",
            highlight=False,
        )
        armed = False  # a first Ctrl-C at an empty prompt arms the second
        while True:
            try:
                text = self._read_message()
            except EOFError:
                self.console.print()
                return 0
            except KeyboardInterrupt:
                if armed:
                    self.console.print()
                    return 0
                armed = True
                self.console.print("[dim](Ctrl-C again or Ctrl-D to exit)[/dim]")
                continue
            armed = False
            if not text:
                continue
            try:
                with self.ctrl_c.live():
                    if text.startswith("/"):
                        if not self._command(text):
                            return 0
                        continue
                    self._ask(text)
            except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
                if self.history and self.history[-1]["role"] == "user":
                    self.history.pop()  # keep user / assistant turns alternating
                self.console.print(" [dim](stopped)[/dim]")

    def _alias_ok(self, name: str) -> bool:
        """An alias is not listed as a model id; ask the server whether it knows the name (as
        a chat model)."""
        try:
            reply = self.client._http.get(f"/models/{quote(name)}", timeout=10)
            reply.raise_for_status()
            card = reply.json()
        except (httpx.HTTPError, ValueError):
            return False
        return isinstance(card, dict) and is_chat_model(card)

    def _unknown_model(self, name: str) -> None:
        available = ", ".join(self.models) or "none"
        self.console.print(
            f"[red]llmgate: model '{name}' is not served there; available: {available}[/red]",
            highlight=False,
        )

    def _command(self, text: str) -> bool:
        """Run a slash command; False means exit."""
        name, _, rest = text.partition(" ")
        rest = rest.strip()
        print_ = self.console.print
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/help":
            print_(HELP, highlight=False, markup=False)
        elif name == "/reset":
            self.history.clear()
            self.left_out.clear()
            print_("[dim]conversation cleared[/dim]")
        elif name == "/stats":
            self.show_stats = not self.show_stats
            print_(f"[dim]stats after each answer: {'on' if self.show_stats else 'off'}[/dim]")
        elif name == "/system":
            self.system = rest or None
            print_(f"[dim]system prompt {'set' if rest else 'cleared'}[/dim]")
        elif name == "/models":
            print_("\n".join(self.models), highlight=False, markup=False)
        elif name == "/model":
            self._switch_model(rest)
        elif name == "/set":
            self._set(rest)
        else:
            print_(f"[red]unknown command {name}; /help lists them[/red]", highlight=False)
        return True

    def _switch_model(self, name: str) -> None:
        if not name:
            self.console.print(f"model: {self.model}", highlight=False)
            return
        try:
            self.models = self.client.models()
        except ChatError as exc:
            self.console.print(f"[red]{exc}[/red]", highlight=False)
            return
        if name not in self.models and not self._alias_ok(name):
            self._unknown_model(name)
            return
        self.model = name
        self.console.print(f"[dim]now chatting with {name}[/dim]", highlight=False)

    def _set(self, rest: str) -> None:
        if not rest:
            shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
            self.console.print(shown or "defaults", highlight=False)
            return
        key, _, value = rest.partition(" ")
        kind = SETTINGS.get(key)
        if kind is None:
            self.console.print(f"[red]/set takes one of {', '.join(SETTINGS)}[/red]")
            return
        try:
            self.settings[key] = kind(value)
        except ValueError:
            self.console.print(f"[red]{key} needs a {kind.__name__}, got {value!r}[/red]")
            return
        self.console.print(f"[dim]{key} = {self.settings[key]}[/dim]", highlight=False)

    def _ask(self, text: str) -> None:
        """Send ``text`` with the history and show the answer as it streams. A chat longer than
        the model's window goes on: the answer gets at most half the window (when the server
        says how large it is), and the oldest exchanges are left out of the request, as many as
        it takes (the history keeps them)."""
        self.history.append({"role": "user", "content": text})
        skip = self.left_out.get(self.model, 0)
        max_tokens = self._max_tokens()
        while True:
            answer = Answer()
            try:
                self._stream(self._body(skip, max_tokens), answer)
                break
            except ChatError as exc:
                if exc.code == "context_length_exceeded" and not (answer.text or answer.reasoning):
                    if skip < self._turns() - 1:
                        skip += 1
                        continue
                    if max_tokens is not None:
                        max_tokens = None  # the window is unknown here: the room that is left
                        continue
                    exc = ChatError(f"{exc} (shorten the message, or /reset)", exc.code)
                self.console.print(f"\n[red]error: {exc}[/red]", highlight=False)
                self.history.pop()
                return
        self.left_out[self.model] = skip
        self.console.print(" [dim](stopped)[/dim]" if answer.stopped else "")
        if answer.text:
            self.history.append({"role": "assistant", "content": answer.text})
        else:
            self.history.pop()
        if skip:
            self.console.print(
                f"[dim]({skip} older exchange{'s' if skip > 1 else ''} left out to fit the "
                "model's window; /reset starts over)[/dim]",
                highlight=False,
            )
        if self.show_stats:
            self.console.print(f"[dim]{answer.stats()}[/dim]", highlight=False)

    def _max_tokens(self) -> int | None:
        wanted = int(self.settings.get("max_tokens", 0)) or None
        window = self.client.windows.get(self.model)
        if wanted is None or window is None:
            return wanted
        return min(wanted, max(16, window // 2))

    def _turns(self) -> int:
        return sum(1 for message in self.history if message["role"] == "user")

    def _body(self, skip: int, max_tokens: int | None) -> dict[str, Any]:
        """The request: the system prompt, the history less its ``skip`` oldest exchanges."""
        turn = -1
        kept: list[dict[str, str]] = []
        for message in self.history:
            turn += message["role"] == "user"
            if turn >= skip:
                kept.append(message)
        system = [{"role": "system", "content": self.system}] if self.system else []
        settings = {k: v for k, v in self.settings.items() if k != "max_tokens"}
        if max_tokens is not None:
            settings["max_tokens"] = max_tokens
        return {
            "model": self.model,
            "messages": system + kept,
            "stream": True,
            "stream_options": {"include_usage": True},
            **settings,
        }

    def _stream(self, body: dict[str, Any], answer: Answer) -> None:
        """Show the answer to ``body`` as it streams into ``answer``; Ctrl-C stops it."""
        chunks = self.client.stream(body)
        try:
            for chunk in chunks:
                self._show(chunk, answer)
        except KeyboardInterrupt:
            answer.stopped = True
        finally:
            chunks.close()  # closes the request: the server stops generating

    def _show(self, chunk: dict[str, Any], answer: Answer) -> None:
        if chunk.get("usage"):
            answer.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # either name
            content = delta.get("content")
            if reasoning or content:
                answer.last = time.perf_counter()
                answer.first = answer.first or answer.last
            if reasoning:
                answer.reasoning += reasoning
                self.console.print(
                    printable(reasoning), style="dim", end="", markup=False, highlight=False
                )
            if content:
                if answer.reasoning and not answer.text:
                    self.console.file.write("\n")  # the answer starts below the reasoning
                answer.text += content
                self.console.file.write(printable(content))
                self.console.file.flush()


def run_chat(url: str, model: str, api_key: str | None, system: str | None, max_tokens: int) -> int:
    console = Console(highlight=False)
    try:
        client = ChatClient(url, api_key)
    except ChatError as exc:
        console.print(f"[red]llmgate: {exc}[/red]", highlight=False)
        return 2
    try:
        return TerminalChat(client, model, system, max_tokens, console).run()
    except KeyboardInterrupt:  # Ctrl-C before the prompt was up (a slow server at start)
        console.print()
        return 130
    finally:
        client.close()
