"""Generated bad input against the REST API and the kernel's control channel.

Invariants, for every example: no 5xx; error bodies ≤ 1 KB; no error or traceback in the
server's log; the kernel neither restarts nor dies; a legitimate cancel works afterwards.
"""

from __future__ import annotations

import json
import logging
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import HTTPClientError

from tests.helpers.server import left_alive, wait_gone

BASE = ("jupyter-cancel", "api")
FIELDS = ["reason", "cell_id", "client_session", "kernel_id", "operation_ids", "all", "action", "wait"]
# Any JSON value, including lone surrogates and huge or deeply nested values.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), VALUES, max_size=6).map(json.dumps),
    st.binary(max_size=200),
    st.builds(lambda n: "[" * n, st.integers(1, 200_000)),
    st.builds(
        lambda s: '{"reason": "' + s + '"}', st.sampled_from(["\\ud800", "\\udfff", "a\\ud83d", "\\u0000"])
    ),
    st.builds(lambda n: json.dumps({"reason": "r" * n}), st.integers(150, 3_000_000)),
)
IDS = st.text(min_size=1, max_size=300).filter(lambda s: s not in (".", ".."))
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors(jp_serverapp):
    handler = _Errors()
    loggers = [jp_serverapp.log, logging.getLogger("tornado"), logging.getLogger("jupyter_cancel")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def kernel(harness, jp_asyncio_loop):
    """A kernel running one tree: (kernel id, kernel pid, client, tree pids)."""
    run = jp_asyncio_loop.run_until_complete
    kid = run(harness.start_kernel())
    client = run(harness.connect(kid))
    pids = run(harness.start_tree(client))
    return kid, harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid, client, pids


def _still_fine(harness, run, kernel, errors) -> None:
    """Same kernel process, nothing logged as an error, and a legitimate cancel works."""
    kid, pid, client, pids = kernel
    assert harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid == pid, "kernel restarted"
    assert errors == [], [r.getMessage()[:300] for r in errors]
    fresh = run(harness.start_tree(client, cell="fresh"))
    r = run(harness.api("POST", *BASE, "kernels", kid, "cancel", body={"cell_id": "fresh"}))
    assert len(r["cancelled"]) == 1 and run(wait_gone(fresh)) == []
    run(harness.api("POST", *BASE, "kernels", kid, "cancel", body={}))
    assert run(wait_gone(pids)) == []


def _fetch(jp_fetch, run, *parts, body):
    try:
        return run(jp_fetch(*parts, method="POST", body=body)).code, b""
    except HTTPClientError as err:
        return err.code, err.response.body if err.response is not None else b""


def test_rest_bodies_and_ids(harness, jp_fetch, jp_asyncio_loop, kernel, server_errors):
    run = jp_asyncio_loop.run_until_complete
    kid, _, client, _ = kernel

    @SETTINGS
    @given(body=BODIES, op_id=IDS, session=IDS, target=st.sampled_from(["operation", "kernel", "client"]))
    def one(body, op_id, session, target):
        if target == "kernel":
            parts = (*BASE, "kernels", kid, "cancel")  # a valid body cancels: that is allowed
        elif target == "operation":
            parts = (*BASE, "operations", urllib.parse.quote(op_id, safe=""), "cancel")
        else:
            if session == client.session:
                return
            parts = (*BASE, "clients", urllib.parse.quote(session, safe=""), "closed")
        code, text = _fetch(jp_fetch, run, *parts, body=body)
        assert code < 500, (code, text[:300])
        if code >= 400:
            assert len(text) <= 1024, len(text)

    one()
    _still_fine(harness, run, kernel, server_errors)


def test_control_channel_contents(harness, jp_asyncio_loop, kernel, server_errors):
    run = jp_asyncio_loop.run_until_complete
    kid, _, client, pids = kernel
    link = harness.app.web_app.settings["jupyter_cancel_tracker"].link(kid)
    sendable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
    plain = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | sendable,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(sendable, inner, max_size=5),
        max_leaves=20,
    )
    # A message's content is an object (jupyter_client cannot even send anything else).
    contents = st.dictionaries(st.sampled_from(FIELDS) | sendable, plain, max_size=6)

    @SETTINGS
    @given(content=contents)
    def one(content):
        if isinstance(content, dict) and content.get("action") == "cancel":
            content = dict(content, action="list")  # a valid cancel of everything is not bad input
        reply = run(link.request(content, 10))
        assert reply is not None, "no reply: the control thread is stuck or dead"
        assert reply.get("status") in ("ok", "error"), reply
        if reply["status"] == "error":
            assert len(reply.get("evalue", "")) <= 1024

    one()
    assert left_alive(pids) == pids, "a list or health request cancelled work"
    _still_fine(harness, run, kernel, server_errors)
