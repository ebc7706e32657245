"""Where a Ctrl-C that arrives as SIGINT may land in ``llmgate chat`` (``CtrlC``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CtrlC:
    """Where a Ctrl-C that arrives as SIGINT may land.

    At a prompt the terminal is raw and Ctrl-C is a key binding. Between prompts it is a
    signal, and Python's default handler raises ``KeyboardInterrupt`` wherever the main
    thread happens to be: inside prompt_toolkit building or tearing down its event loop, a
    half-made loop then prints a traceback at exit. So a SIGINT is raised at once only while
    ``live()`` (an answer streams, a request is under way); otherwise it is held and raised
    at the next safe point: the next prompt (also once that prompt is set up) or the next
    ``live()``.
    """

    def __init__(self) -> None:
        self.held = False
        self._live = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._live:
            raise KeyboardInterrupt
        self.held = True

    def raise_held(self) -> None:
        if self.held:
            self.held = False
            raise KeyboardInterrupt

    @contextmanager
    def live(self) -> Iterator[None]:
        self.raise_held()
        self._live = True
        try:
            yield
        finally:
            self._live = False
