"""The cookie a captured spawn passes on: in the C environment for that spawn only, as it was
after, and no memory kept per spawn (glibc's ``setenv`` keeps every value it was ever given)."""

from __future__ import annotations

import ctypes
import os
import subprocess

import psutil

from jupyter_cancel.core import capture
from jupyter_cancel.core.proctree import COOKIE


def _c_getenv(name: str) -> bytes | None:
    getenv = ctypes.CDLL(None).getenv
    getenv.argtypes, getenv.restype = [ctypes.c_char_p], ctypes.c_char_p
    value: bytes | None = getenv(name.encode())
    return value


def _child_sees() -> bytes:
    return subprocess.run(["sh", "-c", f'printf %s "${COOKIE}"'], capture_output=True, check=True).stdout


def test_a_cookie_is_in_the_c_environment_for_its_spawn_only():
    with capture._cookie_in_environ("op-1"):
        assert _c_getenv(COOKIE) == b"op-1" and _child_sees() == b"op-1"
    assert _c_getenv(COOKIE) is None and COOKIE not in os.environ and _child_sees() == b""


def test_a_cookie_the_process_had_is_put_back(monkeypatch):
    monkeypatch.setenv(COOKIE, "outer")  # (a kernel started as another kernel's work)
    with capture._cookie_in_environ("op-2"):
        assert _child_sees() == b"op-2"
    assert _c_getenv(COOKIE) == b"outer" and os.environ[COOKIE] == "outer"


def test_a_cookie_a_stop_left_in_stays_valid_until_replaced():
    """A stop landing between the spawn and the cookie's removal leaves the entry in the C
    environment: it must stay ours to point to (freed, its memory would be reused under it)."""
    with capture._ENV_LOCK:
        capture._put_cookie("left-by-a-stop")  # (its _take_cookie never ran)
    reuse = [bytes(32) for _ in range(20_000)]  # what a freed entry's memory would now hold
    try:
        assert _child_sees() == b"left-by-a-stop"
    finally:
        del reuse
        with capture._cookie_in_environ("next"):  # replaces it, then takes it out
            pass
    assert _c_getenv(COOKIE) is None


def test_a_cookie_per_spawn_keeps_no_memory():
    proc = psutil.Process()
    before = proc.memory_info().rss
    for i in range(200_000):
        with capture._cookie_in_environ(f"leak-test-{i}"):
            pass
    grown = proc.memory_info().rss - before
    assert grown < 4_000_000, f"{grown} bytes kept for 200,000 cookies (setenv kept ~16 MB)"
