"""Where a SIGINT lands in ``llmgate chat``: raised at once only while a request is live,
otherwise held for the next safe point (a half-built prompt_toolkit event loop interrupted
by a raw ``KeyboardInterrupt`` printed a traceback at exit)."""

from __future__ import annotations

import os
import signal

import pytest

from gateway.ctrl_c import CtrlC


def interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread, before kill returns


def test_a_sigint_between_prompts_is_held_then_raised_at_the_next_safe_point():
    ctrl_c = CtrlC()
    ctrl_c.install()
    try:
        interrupt()  # not live: nothing is raised here
        assert ctrl_c.held
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.raise_held()
        assert not ctrl_c.held
        ctrl_c.raise_held()  # raised once only
        interrupt()
        with pytest.raises(KeyboardInterrupt), ctrl_c.live():  # entering live raises it
            raise AssertionError("the body must not run")
    finally:
        ctrl_c.uninstall()


def test_a_sigint_while_live_is_raised_at_once_and_uninstall_restores_the_handler():
    before = signal.getsignal(signal.SIGINT)
    ctrl_c = CtrlC()
    ctrl_c.install()
    try:
        with pytest.raises(KeyboardInterrupt), ctrl_c.live():
            interrupt()
            raise AssertionError("the interrupt did not stop the live block")
        assert not ctrl_c.held
    finally:
        ctrl_c.uninstall()
    assert signal.getsignal(signal.SIGINT) is before
