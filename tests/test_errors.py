"""The exception types and the wording of kernel refusals."""

from __future__ import annotations

import errno
import pickle
import subprocess

import pytest

import pyclone
from pyclone import ChildError, TimeoutExpired, UnsupportedFlags
from pyclone.errors import clone_error

from conftest import fresh_python


def test_unsupported_flags_is_a_value_error() -> None:
    assert issubclass(UnsupportedFlags, ValueError)
    assert UnsupportedFlags.__module__ == "pyclone"
    assert UnsupportedFlags.__doc__


def test_timeout_expired_is_subprocess_compatible() -> None:
    error = TimeoutExpired(1234, 0.5)
    assert isinstance(error, subprocess.TimeoutExpired)
    assert error.pid == 1234 and error.timeout == 0.5
    assert str(error) == "task 1234 did not end within 0.5 seconds"


def test_child_error_pickles_with_its_attributes() -> None:
    error = ChildError(
        "task 7 raised KeyError: 'x'",
        exception=KeyError("x"),
        remote_traceback="Traceback ...\nKeyError: 'x'\n",
        returncode=1,
    )
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ChildError)
    assert isinstance(copy.exception, KeyError)
    assert copy.remote_traceback == error.remote_traceback
    assert copy.returncode == 1
    assert str(copy) == str(error)


def test_clone_error_names_flags_and_errno() -> None:
    exc = clone_error(errno.EPERM, pyclone.CLONE_NEWNET | 17, "clone", 17)
    assert isinstance(exc, PermissionError)
    assert exc.errno == errno.EPERM
    assert str(exc).startswith("[Errno 1] clone(CLONE_NEWNET|SIGCHLD): Operation not permitted")
    exc3 = clone_error(errno.EINVAL, pyclone.CLONE_NEWTIME, "clone3", 0)
    assert "clone3(CLONE_NEWTIME, exit_signal=0)" in str(exc3)


def test_timeout_expired_is_one_class_under_its_public_name() -> None:
    """It lives in ``pyclone._timeout`` (so that subprocess loads late) but says pyclone.errors."""
    from pyclone import _timeout, errors

    assert errors.TimeoutExpired is TimeoutExpired is _timeout.TimeoutExpired
    assert TimeoutExpired.__module__ == "pyclone.errors"
    assert "TimeoutExpired" in errors.__all__
    copy = pickle.loads(pickle.dumps(TimeoutExpired(77, 1.5)))
    assert type(copy) is TimeoutExpired
    assert (copy.pid, copy.timeout, str(copy)) == (
        77,
        1.5,
        "task 77 did not end within 1.5 seconds",
    )
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchError'"):
        errors.NoSuchError  # noqa: B018


def test_importing_the_errors_loads_subprocess_only_for_timeout_expired() -> None:
    fresh_python(
        "import pyclone.errors as e\n"
        "assert 'subprocess' not in sys.modules\n"
        "e.ChildError, e.UnsupportedFlags\n"
        "assert 'subprocess' not in sys.modules\n"
        "from pyclone.errors import TimeoutExpired\n"
        "assert 'subprocess' in sys.modules and issubclass(TimeoutExpired, TimeoutError)\n"
    )


#: A wait with a timeout in a process with no descriptor left to import with.
_NO_FD_WAIT = """
import os, resource, signal
import pyclone
from pyclone import actions
task = pyclone.spawn_task(actions.sleep(15))  # gone soon, even if this one is killed
assert "subprocess" not in sys.modules
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
signal.signal(signal.SIGALRM, signal.SIG_DFL)  # whatever the test runner left
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])
signal.alarm(5)  # kills this interpreter if the 30 s wait begins
try:
    task.wait(30)
except OSError as exc:
    outcome = os.strerror(exc.errno)
else:
    outcome = "waited"
signal.alarm(0)
for fd in fds:
    os.close(fd)
running = task.poll() is None
task.kill()
task.wait(10)
print(outcome, running)
"""


def test_a_timed_wait_that_cannot_load_timeout_expired_fails_before_waiting() -> None:
    """The class's first read imports subprocess: with no descriptor left that fails,
    and it must fail at once, not once the time is up (nor leave the task)."""
    out = fresh_python(_NO_FD_WAIT, timeout=60)
    assert out.split() == ["Too", "many", "open", "files", "True"]
