"""A process's identity: the one parser the watchdog and the server use before they signal."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_cancel.core.identity import CTIME_TOLERANCE, identity_of, process_of


def test_an_identity_names_its_process_until_the_pid_means_another():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        ident = identity_of(__import__("psutil").Process(child.pid))
        assert process_of(ident).pid == child.pid
        assert process_of(list(ident)).pid == child.pid  # as it arrives in JSON
        # The same pid with another start time: a reused pid, never signalled.
        assert process_of([child.pid, ident[1] + 10 * CTIME_TOLERANCE]) is None
        assert process_of([child.pid, ident[1] - 10 * CTIME_TOLERANCE]) is None
    finally:
        child.stdin.close()
        child.wait()
    assert process_of(ident) is None  # gone


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=5),
        st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none()), max_size=3),
    )
)
def test_what_is_not_an_identity_names_no_process(value):
    found = process_of(value)
    # Only a real [pid, create_time] pair can name a process, and never this one by accident
    # of a bad value: an int, a string or None never does.
    if not (isinstance(value, list) and len(value) == 2):
        assert found is None
    elif found is not None:
        assert found.pid == int(value[0]) > 0


def test_this_process_is_named_only_by_its_own_start_time():
    me = __import__("psutil").Process()
    assert process_of([os.getpid(), me.create_time()]).pid == os.getpid()
    assert process_of([os.getpid(), 0.0]) is None
