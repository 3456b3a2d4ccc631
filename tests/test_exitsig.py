"""The exit-signal policy (pyclone._exitsig): the exit signals spawn_task, clone, clone3 refuse.

Each case runs in a forked helper (``run_forked``) that sets the dispositions
it needs, so the test process keeps its own; the accepted signals are really
delivered to the helper, which must survive them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest

import pyclone
from pyclone import _pyclone, actions
from pyclone._exitsig import check_exit_signal, default_action

from conftest import WAIT, Health, reap, run_forked

#: With every disposition at SIG_DFL, the exit signals that are accepted:
#: those whose default action ignores (SIGCHLD, SIGURG, SIGWINCH) or continues (SIGCONT).
ACCEPTED_BY_DEFAULT = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH}
#: glibc's internal signals: the signal module cannot set them, glibc may have a handler.
GLIBC_INTERNAL = {32, 33}
APIS = ("spawn_task", "clone", "clone3")


def _launch(api: str, sig: int, **opt: bool) -> None:
    """Create a task with exit signal ``sig`` through ``api`` and wait for it."""
    if api == "spawn_task":
        with pyclone.spawn_task(lambda: 0, exit_signal=sig, **opt) as task:
            assert task.wait(WAIT) == 0
    elif api == "clone":
        pid = pyclone.clone(lambda: 0, sig, **opt)
        assert os.waitstatus_to_exitcode(reap(pid)) == 0
    else:
        pid, _ = pyclone.clone3(lambda: 0, exit_signal=sig, **opt)
        assert os.waitstatus_to_exitcode(reap(pid)) == 0


def _reset_all_to_default() -> None:
    for sig in range(1, 65):
        if sig in (signal.SIGKILL, signal.SIGSTOP) or sig in GLIBC_INTERNAL:
            continue
        signal.signal(sig, signal.SIG_DFL)


def _table() -> dict[int, list[str]]:
    """In the helper: for each signal, the APIs that refused it (all dispositions SIG_DFL)."""
    _reset_all_to_default()
    refused: dict[int, list[str]] = {}
    for sig in range(1, 65):
        refused[sig] = []
        for api in APIS:
            try:
                _launch(api, sig)
            except ValueError as exc:
                text = str(exc)
                assert "allow_fatal_exit_signal=True" in text and "SIGCHLD or 0" in text
                refused[sig].append(api)
    return refused


def test_every_signal_with_default_dispositions() -> None:
    refused = run_forked(_table, timeout=10 * WAIT)
    assert isinstance(refused, dict)
    internal = run_forked(lambda: [_pyclone._signal_disposition(s) for s in sorted(GLIBC_INTERNAL)])
    assert isinstance(internal, list)
    glibc_handled = {
        s for s, disp in zip(sorted(GLIBC_INTERNAL), internal, strict=True) if disp == 2
    }
    for sig in range(1, 65):
        accepted = sig in ACCEPTED_BY_DEFAULT or sig in glibc_handled
        assert refused[sig] == ([] if accepted else list(APIS)), (sig, default_action(sig))


def test_refused_messages_name_the_signal_and_the_fix() -> None:
    def messages() -> list[str]:
        _reset_all_to_default()
        out = []
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, 40):
            with pytest.raises(ValueError) as info:
                pyclone.spawn_task(lambda: 0, exit_signal=sig)
            out.append(str(info.value))
        return out

    term, kill, stop, segv, rt = run_forked(messages)  # type: ignore[misc]
    assert "exit_signal=SIGTERM" in term and "signal.signal(signal.SIGTERM, handler)" in term
    assert "terminate the caller" in term
    assert "SIGKILL can have no handler" in kill and "signal.signal" not in kill
    assert "stop the caller" in stop
    assert "core dump" in segv
    assert "SIGRTMIN+6" in rt


def test_a_handler_or_sig_ign_makes_every_signal_acceptable() -> None:
    def deliver() -> dict[int, int]:
        _reset_all_to_default()
        got: dict[int, int] = {}
        for sig in range(1, 65):
            if sig in (signal.SIGKILL, signal.SIGSTOP) or sig in GLIBC_INTERNAL:
                continue
            signal.signal(sig, lambda s, _f: got.__setitem__(s, got.get(s, 0) + 1))
            for api in APIS:
                _launch(api, sig)
            if sig != signal.SIGCHLD:  # an ignored SIGCHLD makes the kernel reap the task
                signal.signal(sig, signal.SIG_IGN)
                _launch("spawn_task", sig)  # ignored: delivered to nothing
            signal.signal(sig, signal.SIG_DFL)
        return got

    got = run_forked(deliver, timeout=10 * WAIT)
    assert isinstance(got, dict)
    expected = set(range(1, 65)) - {signal.SIGKILL, signal.SIGSTOP} - GLIBC_INTERNAL
    assert set(got) == expected  # each handler ran: the signals were really sent
    assert all(count >= len(APIS) for count in got.values())  # once per API at least


def test_sigint_with_pythons_default_handler_is_refused() -> None:
    def check() -> tuple[str, int]:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(ValueError, match="KeyboardInterrupt") as info:
            pyclone.clone(lambda: 0, signal.SIGINT)
        seen = []
        signal.signal(signal.SIGINT, lambda *_: seen.append(1))
        _launch("clone", signal.SIGINT)
        return str(info.value), len(seen)

    text, seen = run_forked(check)  # type: ignore[misc]
    assert "exit signal SIGINT (the low byte of flags)" in text
    assert seen == 1


def test_a_handler_installed_from_c_counts() -> None:
    # glibc installs a handler for its signal 33 (SIGSETXID) once a thread was started;
    # the signal module does not see it (getsignal says None), the kernel does.
    def check() -> tuple[int, object]:
        worker = threading.Thread(target=lambda: None)
        worker.start()
        worker.join(WAIT)
        disp = _pyclone._signal_disposition(33)
        if disp == 2:
            # not refused (an action: the helper has had a thread, a raw clone would refuse)
            with pyclone.spawn_task(actions.exit(0), exit_signal=33) as task:
                assert task.wait(WAIT) == 0
        return disp, signal.getsignal(33)

    disp, believed = run_forked(check)  # type: ignore[misc]
    if disp != 2:
        pytest.skip("this C library installs no handler for signal 33")
    assert believed is None


def _status_of_forked(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked helper that then exits 0; return the helper's wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the helper
        try:
            fn()
        finally:
            os._exit(0)
    return reap(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, 64])
@pytest.mark.parametrize("api", APIS)
def test_the_opt_in_lets_the_signal_through_and_it_kills_an_unprepared_caller(
    api: str, sig: int
) -> None:
    def launch() -> None:
        _reset_all_to_default()
        _launch(api, sig, allow_fatal_exit_signal=True)

    status = _status_of_forked(launch)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig


@pytest.mark.parametrize("api", APIS)
def test_the_opt_in_with_the_signal_blocked_and_collected(api: str) -> None:
    def launch() -> int:
        _reset_all_to_default()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _launch(api, signal.SIGTERM, allow_fatal_exit_signal=True)
        got = signal.sigtimedwait([signal.SIGTERM], WAIT)
        assert got is not None
        return got.si_signo

    assert run_forked(launch) == signal.SIGTERM


def test_no_check_where_the_kernel_sends_no_signal_of_the_tasks_choosing(healthy: Health) -> None:
    # CLONE_THREAD/CLONE_PARENT: spawn_task passes 0, clone(2) ignores the low byte
    with pyclone.spawn_task(actions.exit(0), share="thread", exit_signal=signal.SIGTERM) as task:
        assert task.wait(WAIT) == 0
    # clone(2)'s low byte above 64 is no signal: the kernel sends nothing
    assert run_forked(lambda: os.waitstatus_to_exitcode(reap(pyclone.clone(lambda: 0, 65)))) == 0


def test_a_default_signal_step_on_the_shared_exit_signal_is_refused(healthy: Health) -> None:
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        step = actions.default_signal(signal.SIGUSR1)
        with pytest.raises(ValueError, match="resets SIGUSR1 to SIG_DFL"):
            pyclone.spawn_task(step, share={"vm", "sighand"}, exit_signal=signal.SIGUSR1)
        with pytest.raises(ValueError, match="drop that step"):
            pyclone.clone(step, pyclone.CLONE_VM | pyclone.CLONE_SIGHAND | signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_the_opt_in_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="allow_fatal_exit_signal"):
        check_exit_signal(signal.SIGTERM, 0, allow=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_fatal_exit_signal"):
        pyclone.spawn_task(lambda: 0, allow_fatal_exit_signal="yes")  # type: ignore[arg-type]


def test_signal_disposition_reads_the_kernel(healthy: Health) -> None:
    assert _pyclone._signal_disposition(signal.SIGPIPE) == 1  # Python ignores it at startup
    assert _pyclone._signal_disposition(signal.SIGKILL) == 0
    old = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        assert _pyclone._signal_disposition(signal.SIGUSR2) == 2
    finally:
        signal.signal(signal.SIGUSR2, old)
    for bad in (0, 65, -1):
        with pytest.raises(ValueError, match=r"1\.\.64"):
            _pyclone._signal_disposition(bad)
    with pytest.raises(TypeError):
        _pyclone._signal_disposition("1")  # type: ignore[arg-type]
