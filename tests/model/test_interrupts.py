"""Ctrl-C held back inside a guarded section of the training loop (model/interrupts.py), with a real SIGINT."""

from __future__ import annotations

import signal
import threading

import pytest
from smallest_loss.model.interrupts import HeldInterrupts


def ctrl_c() -> None:
    signal.raise_signal(signal.SIGINT)  # the handler has run when this returns


def test_a_ctrl_c_inside_a_section_takes_effect_when_it_ends():
    guard, done = HeldInterrupts(), []
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        with guard:
            ctrl_c()
            with guard:  # nested sections: held until the outermost ends
                done.append("inner")
            done.append("outer")
        done.append("after the section")  # never reached: the held Ctrl-C is raised as the section ends
    assert done == ["inner", "outer"]


def test_a_second_ctrl_c_or_one_outside_a_section_interrupts_at_once():
    guard, done = HeldInterrupts(), []
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        with guard:
            ctrl_c()
            done.append("first held")
            ctrl_c()
            done.append("never")
    assert done == ["first held"]
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        ctrl_c()
    assert not guard.pending


def test_the_previous_handler_comes_back_and_an_error_in_the_section_goes_on():
    before = signal.getsignal(signal.SIGINT)
    guard = HeldInterrupts()
    with guard.installed(), pytest.raises(ValueError):
        with guard:
            ctrl_c()
            raise ValueError("the section's own error wins over the held Ctrl-C")
    assert signal.getsignal(signal.SIGINT) is before and not guard.pending


def test_outside_the_main_thread_it_installs_nothing():
    seen = []

    def worker() -> None:
        guard = HeldInterrupts()
        with guard.installed(), guard:
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]
