"""LLM workloads: CLI streams, HTTP streams cancelled mid-read, batches, timeouts, errors."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import jupyter_cancel as jc
from jupyter_cancel.llm import LLMError, batch, stream_chat, stream_cli
from jupyter_cancel.llm.devserver import DevServer
from jupyter_cancel.llm.http import _stream
from tests.helpers.wait import until

SLOW = str(Path(__file__).resolve().parents[1] / "helpers" / "slow_tokens.py")


@pytest.fixture
def server():
    s = DevServer(delay=0.05, tokens=100000).start_background()
    yield s
    s.shutdown()
    s.server_close()


def cancel_when(predicate, reason="user", timeout=10.0):
    """Cancel all work from another thread once ``predicate()`` holds; returns when it was sent."""
    sent = {}

    def run():
        until(predicate, timeout, "the moment to cancel")
        sent["t"] = time.time()
        jc.cancel_all(reason)

    t = threading.Thread(target=run)
    t.start()
    return t, sent


def test_cli_stream_ignoring_sigterm_is_killed_and_keeps_its_tokens():
    op_ref = {}

    def started():
        ops = jc.operations()
        if ops:
            op_ref["op"] = ops[0]
        return bool(ops) and ops[0].output.count("tok") >= 5

    t, _ = cancel_when(started)
    with pytest.raises(jc.Cancelled) as info:
        stream_cli(
            [sys.executable, SLOW, "--ignore-term"], name="llama-cli (stand-in)", grace=0.5, display=False
        )
    t.join()
    op = info.value.operation
    assert op.state is jc.State.CANCELLED and op.returncode == -9  # SIGKILL at the grace
    assert op.output.startswith("tok0 tok1 ")
    assert op.progress["n"] >= 5 and op.progress["rate"].endswith("tok/s")
    assert op.pids() == []


def test_cli_stream_to_the_end_reports_rate():
    op = stream_cli([sys.executable, SLOW, "--tokens", "20", "--delay", "0.001"], display=False)
    assert op.state is jc.State.COMPLETED and op.output.count("tok") == 20
    assert op.progress["n"] == 20


def test_http_stream_cancel_while_blocked_closes_the_connection():
    slow = DevServer(delay=5.0, tokens=10).start_background()  # a read blocks ~5 s per token
    try:
        t, sent = cancel_when(lambda: slow.stats()["active"] == 1)
        with pytest.raises(jc.Cancelled):
            stream_chat("hello", url=slow.url, model="demo")
        t.join()
        (seen,) = until(lambda: slow.stats()["disconnects"], 10, "the server saw the disconnect")
        # Closed by our cancel mid-stream, not by the stream ending (how fast: bench/).
        assert seen["tokens_sent"] < 10 and slow.stats()["completed"] == []
    finally:
        slow.shutdown()
        slow.server_close()


def test_a_cancel_between_the_headers_and_the_first_read_is_a_cancel(server):
    # The cancel lands once the response is open and before a byte of it is read: the
    # shutdown it runs closes the stream, and that reads as the cancel, not an error.
    scope = jc.scope("late stop", kind="llm")
    with pytest.raises(jc.Cancelled), scope:
        jc.cancel(scope.operation)
        _stream(
            scope, server.url + "/chat/completions", {"model": "demo", "stream": True}, {}, httpx.Timeout(10)
        )
    assert scope.operation.state is jc.State.CANCELLED
    (seen,) = until(lambda: server.stats()["disconnects"], 10, "the server saw the disconnect")
    assert server.stats()["completed"] == []


def test_http_stream_completes_and_counts_tokens(server):
    server.tokens = 30
    text = stream_chat([{"role": "user", "content": "hi"}], url=server.url, model="demo", max_tokens=30)
    assert len(text.split()) == 30
    op = jc.operations(include_done=True)[-1]
    assert op.kind == "llm" and op.state is jc.State.COMPLETED and op.progress["n"] == 30


def test_timeout_fires_with_reason_timeout(server):
    with pytest.raises(jc.Cancelled) as info:
        stream_chat("hi", url=server.url, model="demo", timeout=0.4)
    assert info.value.reason == "timeout"
    assert "timed out" in info.value._render_traceback_()[0]
    with pytest.raises(jc.Cancelled) as info:
        stream_cli([sys.executable, SLOW], timeout=0.4, display=False)
    assert info.value.reason == "timeout"


def test_batch_cancel_keeps_partial_results(server):
    def describe(item, scope):
        if item == 5:  # a Stop from another thread while item 5 runs
            threading.Thread(target=jc.cancel, args=(scope.operation,)).start()
            until(lambda: scope.cancelled, 10, "the cancel arrived")
        return f"item {item}"

    result = batch(describe, range(100), desc="describe")
    assert result.cancelled and result.reason == "user"
    assert result.results == [f"item {i}" for i in range(5)]

    # within an item: a stream the item started stops with the batch
    def ask(item):
        return stream_chat(f"q{item}", url=server.url, model="demo", max_tokens=3 if item < 2 else 100000)

    t, _ = cancel_when(lambda: server.stats()["active"] == 1 and server.stats()["streams"] >= 3)
    result = batch(ask, range(10), desc="ask")
    t.join()
    assert result.cancelled and len(result.results) == 2
    assert jc.operations() == []


def test_bad_endpoints_give_clear_errors_and_leave_nothing(server):
    before = {o.id for o in jc.operations(include_done=True)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(LLMError, match="could not connect"):
        stream_chat("hi", url=f"http://127.0.0.1:{free}/v1", model="demo")
    with pytest.raises(LLMError, match="http:// or https://"):
        stream_chat("hi", url="ftp://example/v1", model="demo")
    with pytest.raises(LLMError, match="did not stream"):
        stream_chat("hi", url=server.url, model="demo", stream=False)  # the server answers plain JSON
    with pytest.raises(LLMError, match="404"):
        stream_chat("hi", url=server.url + "/nope", model="demo")
    with pytest.raises(ValueError, match="positive"):
        stream_chat("hi", url=server.url, timeout=-1)
    assert jc.operations() == []
    mine = [o for o in jc.operations(include_done=True) if o.id not in before]
    assert [o.state.value for o in mine] == ["failed"] * 3  # connect, did not stream, 404


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[ 45%] Building C object foo.o\n", (45.0, 100.0)),  # make / cmake
        ("[12/80] Compiling bar.cc\n", (12.0, 80.0)),  # ninja
        ("   Building [=====>         ] 45/80: serde\n", (45.0, 80.0)),  # cargo
        ("[ 10%] a\n[3/8] b\n", (3.0, 8.0)),  # the last marker wins
        ("nothing to see\n", None),
        ("[ 150%] broken\n", None),
    ],
    ids=["make", "ninja", "cargo", "last-wins", "none", "out-of-range"],
)
def test_build_output_parser(line, expected):
    from jupyter_cancel.core import Registry
    from jupyter_cancel.core.buildoutput import BuildProgress

    op = Registry(watchdog=False).new(name="build", kind="process")
    BuildProgress()(op, line)
    got = (op.progress["n"], op.progress["total"]) if op.progress else None
    assert got == expected


def test_build_progress_drives_the_bar_to_its_last_step():
    script = 'for i in 10 45 99 100; do echo "[ $i%] Building C object"; done'
    op = jc.run(script, shell=True, display=False)
    assert (op.progress["n"], op.progress["total"]) == (100.0, 100.0)
