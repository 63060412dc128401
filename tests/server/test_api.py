"""REST + event stream: contracts, auth, bad input, events schema, metrics, config."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from tornado.httpclient import HTTPClientError

from tests.helpers.server import TREE, left_alive, wait_gone
from tests.helpers.server import wait_ready as wait_ready_async
from tests.helpers.wait import until_async


async def expect(code, coro):
    with pytest.raises(HTTPClientError) as info:
        await coro
    assert info.value.code == code, info.value
    return info.value


async def test_list_and_cancel_one_operation(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    a = await harness.start_tree(c, cell="a")
    b = await harness.start_tree(c, cell="b")
    ops = (await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid}))[
        "operations"
    ]
    assert {o["cell_id"] for o in ops} == {"a", "b"}
    fields = {
        "id",
        "name",
        "kind",
        "kernel_id",
        "client_session",
        "cell_id",
        "policy",
        "state",
        "reason",
        "pids",
        "started",
        "ended",
        "exit_code",
        "progress",
    }
    assert all(fields <= set(o) for o in ops)
    target = next(o for o in ops if o["cell_id"] == "a")
    done = await harness.api(
        "POST", "jupyter-cancel", "api", "operations", target["id"], "cancel", body={"reason": "stop button"}
    )
    assert done["state"] == "cancelled" and done["exit_code"] == 130
    # Free text is the cancel's message; its source (what policies decide on) is the user.
    assert done["reason"] == "user" and done["message"] == "stop button"
    assert await wait_gone(a, timeout=0) == []
    assert left_alive(b) == b
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={"cell_id": "b"})
    assert len(r["cancelled"]) == 1 and await wait_gone(b, timeout=0) == []


async def test_a_rest_reason_is_a_persons_words_never_a_triggers_source(harness):
    """A REST caller writing "tab_closed" cancels as a user (the tab-close rules would spare
    ``continue`` work), and the words stay the cancel's message; a malformed typed reason on
    the wire is refused by the kernel and changes nothing."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    spared = await harness.start_tree(c, cell="a", opts=", policy='continue'")
    r = await harness.api(
        "POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={"reason": "tab_closed"}
    )
    assert len(r["cancelled"]) == 1
    assert await wait_gone(spared, timeout=10) == []
    (op,) = (await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid}))[
        "operations"
    ]
    assert (op["state"], op["reason"], op["message"]) == ("cancelled", "user", "tab_closed")
    # The wire carries the reason typed; a source that is not one is refused, nothing ends.
    tracker = harness.app.web_app.settings["jupyter_cancel_tracker"]
    live = await harness.start_tree(c, cell="b")
    link = tracker.link(kid)
    for bad in ({"source": "made_up"}, {"source": "user", "extra": 1}, {"source": "user", "message": 3}):
        reply = await link.request({"action": "cancel", "all": True, "reason": bad}, 10)
        assert reply is not None and reply["status"] == "error" and reply["ename"] == "ValueError", reply
    assert left_alive(live) == live
    await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert await wait_gone(live, timeout=10) == []


async def test_bad_requests_change_nothing(harness, jp_fetch):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    base = ("jupyter-cancel", "api")
    await expect(404, jp_fetch(*base, "operations", "nope", "cancel", method="POST", body="{}"))
    await expect(404, jp_fetch(*base, "kernels", "nope", "cancel", method="POST", body="{}"))
    await expect(404, jp_fetch(*base, "operations", params={"kernel_id": "nope"}))
    for body in [
        "not json",
        "[1]",
        json.dumps({"reason": ""}),
        json.dumps({"reason": 5}),
        json.dumps({"cell_id": 3}),
        json.dumps({"surprise": 1}),
    ]:
        err = await expect(400, jp_fetch(*base, "kernels", kid, "cancel", method="POST", body=body))
        assert err.response.body  # a message says what is wrong
    # no auth: 403 for the API (no token, no cookie)
    await expect(403, jp_fetch(*base, "operations", headers={"Authorization": ""}))
    await expect(403, jp_fetch(*base, "resources", headers={"Authorization": ""}))
    await expect(
        403,
        jp_fetch(*base, "kernels", kid, "cancel", method="POST", body="{}", headers={"Authorization": ""}),
    )
    assert left_alive(pids) == pids
    ops = (await harness.api("GET", *base, "operations"))["operations"]
    assert [o["state"] for o in ops] == ["running"]


async def test_event_stream_and_jupyter_events(harness, jp_serverapp):
    recorded = []

    async def listener(logger, schema_id, data):
        recorded.append((schema_id, data))

    from jupyter_cancel.server.events import EVENT_SCHEMA

    jp_serverapp.event_logger.add_listener(schema_id=EVENT_SCHEMA, listener=listener)
    ws = await harness.ws_fetch("jupyter-cancel", "api", "events")
    first = json.loads(await ws.read_message())
    assert first == {"event": "snapshot", "operations": []}
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    await harness.start_tree(c, cell="x")
    await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    seen = []
    while not seen or seen[-1][0] != "ended":
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        seen.append((msg["event"], msg["operation"]["state"], msg["kernel_id"]))
    assert [s[0] for s in seen] == ["started", "cancel_requested", "ended"]
    assert seen[-1] == ("ended", "cancelled", kid)
    ws.close()
    await until_async(lambda: len(recorded) >= 3, 5, "three events logged")
    actions = [d["action"] for _, d in recorded]
    assert actions == ["started", "cancel_requested", "ended"]
    ended = recorded[-1][1]
    assert ended["state"] == "cancelled" and ended["exit_code"] == 130 and ended["reason"] == "user"
    assert ended["duration"] > 0 and ended["cancel_latency"] >= 0


async def test_metrics_on_the_servers_metrics_endpoint(harness, jp_fetch):
    series = 'jupyter_cancel_operations_ended_total{reason="kernel_interrupt",state="cancelled"}'

    async def count() -> float:
        text = (await jp_fetch("metrics")).body.decode()
        line = next((ln for ln in text.splitlines() if ln.startswith(series + " ")), None)
        return float(line.split()[-1]) if line else 0.0

    before = await count()  # the process-wide registry counts earlier tests' work too
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    await harness.start_tree(c)
    await harness.api("POST", "api", "kernels", kid, "interrupt")  # the trigger, not a REST body's words

    async def counted() -> bool:
        return await count() == before + 1

    await until_async(counted, 10, "the ended operation counted")
    text = (await jp_fetch("metrics")).body.decode()
    assert "jupyter_cancel_cancel_latency_seconds_bucket" in text
    assert "jupyter_cancel_running_operations" in text
    assert "jupyter_cancel_unkillable_operations 0.0" in text


async def test_an_operations_latest_output_is_asked_of_its_kernel(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    r = await c.execute(
        "import jupyter_cancel as jc\nop = jc.start(['echo', 'output-for-the-panel'], display=False)\n"
        "op.wait()\nprint(op.id)",
        cell="o",
    )
    assert r["errors"] == [], r
    op_id = r["stdout"].split()[-1]
    await harness.api(
        "GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid}
    )  # the server learns it
    out = await harness.api("GET", "jupyter-cancel", "api", "operations", op_id, "output")
    assert out == {"id": op_id, "output": "output-for-the-panel\n"}
    with pytest.raises(HTTPClientError) as err:
        await harness.api("GET", "jupyter-cancel", "api", "operations", "no-such-op", "output")
    assert err.value.code == 404 and len(err.value.response.body) < 1000


async def test_live_resources_of_running_trees_are_sampled_on_request(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c, cell="tree")
    r = await c.execute(
        "import jupyter_cancel as jc, sys\n"
        "busy = jc.start([sys.executable, '-c', 'while True: pass'], display=False)\nprint(busy.id)",
        cell="busy",
    )
    busy_id = r["stdout"].split()[-1]
    ops = (await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid}))[
        "operations"
    ]
    tree_id = next(o["id"] for o in ops if o["cell_id"] == "tree")

    async def sampled() -> dict:
        return (await harness.api("GET", "jupyter-cancel", "api", "resources"))["resources"]

    first = await sampled()
    assert first[tree_id]["processes"] == len(pids) and first[tree_id]["rss"] > 0, first
    assert first[tree_id]["peak_rss"] >= first[tree_id]["rss"]

    async def busy_counted() -> bool:
        now = await sampled()
        return now.get(busy_id, {}).get("cpu_percent", 0) > 10

    await until_async(busy_counted, 30, "the busy loop's CPU counted")
    # The REST list carries them too (sampled afresh with ?resources=1).
    listed = (
        await harness.api(
            "GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid, "resources": "1"}
        )
    )["operations"]
    by_id = {o["id"]: o for o in listed}
    assert by_id[tree_id]["resources"]["processes"] == len(pids)
    assert by_id[busy_id]["resources"]["cpu_seconds"] > 0
    await expect(404, harness.api("GET", "jupyter-cancel", "api", "resources", params={"kernel_id": "nope"}))
    await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert await wait_gone(pids) == []
    ended = await sampled()
    assert tree_id not in ended and busy_id not in ended


async def test_client_closed_beacon_cancels_at_once(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    r = await harness.api(
        "POST", "jupyter-cancel", "api", "clients", c.session, "closed", body={"kernel_id": kid}
    )
    assert len(r["cancelled"]) == 1 and await wait_gone(pids, timeout=0) == []


async def test_a_page_gone_leaves_its_work_to_the_page_reopening_its_notebook(harness):
    """A page's beacon names its notebook: a page opening that notebook on the same kernel
    within reload_grace takes the work over (a reload); the work lives on, and is the new
    page's (its close ends it)."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    closed = {"kernel_id": kid, "path": "dir/reloaded.ipynb"}
    r = await harness.api("POST", "jupyter-cancel", "api", "clients", c.session, "closed", body=closed)
    assert r["cancelled"] == []  # not yet: it may be a reload
    r = await harness.api("POST", "jupyter-cancel", "api", "clients", "new-page", "opened", body=closed)
    assert r["replaced"] == c.session
    assert left_alive(pids) == pids
    listed = await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid})
    (op,) = [o for o in listed["operations"] if o["state"] == "running"]
    assert op["client_session"] == "new-page"
    r = await harness.api(
        "POST", "jupyter-cancel", "api", "clients", "new-page", "closed", body={"kernel_id": kid}
    )
    assert r["cancelled"] == [op["id"]] and await wait_gone(pids, timeout=0) == []


@pytest.mark.parametrize(
    ("session", "body", "code"),
    [
        ("s", {}, 400),
        ("s", {"kernel_id": "nope", "path": "a.ipynb"}, 404),
        ("s", {"kernel_id": "{kid}", "path": "x" * 5000}, 400),
        ("s", {"kernel_id": "{kid}", "path": 7}, 400),
        ("s", {"kernel_id": "{kid}", "path": "a.ipynb", "extra": 1}, 400),
        ("x" * 300, {"kernel_id": "{kid}", "path": "a.ipynb"}, 400),
    ],
)
async def test_rest_client_opened_bad_input(harness, session, body, code):
    kid = await harness.start_kernel()
    body = {k: v.format(kid=kid) if isinstance(v, str) and k == "kernel_id" else v for k, v in body.items()}
    with pytest.raises(HTTPClientError) as err:
        await harness.api("POST", "jupyter-cancel", "api", "clients", session, "opened", body=body)
    assert err.value.code == code
    assert len(err.value.response.body) < 1000


def test_bad_config_is_refused_at_startup(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--JupyterCancel.llm_timeout=5",
            "--ServerApp.port=0",
            "--allow-root",
            "--no-browser",
            f"--ServerApp.root_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0, out.stderr[-2000:]
    assert "llm_timeout must be between 10 and 3600" in out.stderr


def test_traits_documented_in_help_all():
    # `jupyter server --help-all` lists only ServerApp's own classes; extensions document theirs here.
    out = subprocess.run(
        [sys.executable, "-c", "from jupyter_cancel.server.app import main; main()", "--help-all"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for trait in (
        "grace",
        "tab_close_grace",
        "cancel_on_interrupt",
        "cancel_on_rerun",
        "cancel_on_tab_close",
        "cancel_on_restart",
        "llm_timeout",
        "default_policy",
    ):
        assert f"--JupyterCancel.{trait}" in out.stdout, trait


async def test_the_kernel_extension_can_be_switched_off(harness, jp_serverapp):
    jp_serverapp.web_app.settings["jupyter_cancel"].load_kernel_extension = False
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    r = await c.execute("import sys; print('jupyter_cancel.kernel.extension' in sys.modules)")
    assert r["stdout"] == "False\n"


async def test_server_config_reaches_the_kernels_it_starts(harness, jp_serverapp):
    app = jp_serverapp.web_app.settings["jupyter_cancel"]
    app.cancel_on_rerun = False
    app.default_policy = "continue"
    app.llm_timeout = 42.0
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c, cell="same")
    r = await c.execute(
        "from jupyter_cancel.llm import llm_timeout\nprint(jc.operations()[0].policy.value, llm_timeout())",
        cell="same",
    )
    assert r["stdout"].split() == ["continue", "42.0"]
    assert left_alive(pids) == pids, "re-run cancelled although cancel_on_rerun is off"
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert len(r["cancelled"]) == 1 and await wait_gone(pids) == []


@pytest.mark.parametrize("enabled", [True, False])
async def test_cancel_on_restart_governs_the_servers_step_before_restart(
    harness, jp_serverapp, tmp_path, enabled
):
    """On: the server asks the kernel to cancel before it restarts it. Off: it does not (the
    kernel's own shutdown still ends the work, which the test checks too)."""
    jp_serverapp.web_app.settings["jupyter_cancel"].cancel_on_restart = enabled
    log = tmp_path / "requests.log"
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    # Record every jupyter_cancel_request the kernel is sent (to a file: the kernel is replaced).
    await c.execute(
        "from jupyter_cancel.kernel import extension as _x\n"
        "_k = get_ipython().kernel\n"
        "_orig = _k.control_handlers['jupyter_cancel_request']\n"
        "def _rec(stream, ident, parent, _orig=_orig):\n"
        f"    open({str(log)!r}, 'a').write(repr(parent['content'].get('reason')) + '\\n')\n"
        "    return _orig(stream, ident, parent)\n"
        "_k.control_handlers['jupyter_cancel_request'] = _rec\n"
    )
    pids = await harness.start_tree(c, cell="2")
    await harness.api("POST", "api", "kernels", kid, "restart")
    assert await wait_gone(pids) == []
    sent = log.read_text().splitlines() if log.exists() else []
    # (the reason travels typed: its source is the trigger's)
    assert ("{'source': 'kernel_restart', 'message': None}" in sent) is enabled, sent


async def test_rest_stop_cell_stops_its_python_and_work_not_other_cells(harness, tmp_path):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    other = await harness.start_tree(c, cell="other")
    ready = tmp_path / "mine"
    msg = c.send(
        f"import sys\nop = jc.start([sys.executable, {TREE!r}, 'three', {str(ready)!r}], display=False)\n"
        "while True:\n    pass\n",
        cell="busy",
    )
    mine = await wait_ready_async(ready, 3)
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cells", "busy", "stop", body={})
    assert r["running"] is True and len(r["cancelled"]) == 1
    out = await c.collect(msg)
    assert [e["ename"] for e in out["errors"]] == ["Cancelled"]
    assert await wait_gone(mine) == [] and left_alive(other) == other
    # not running now: only its (no) work, nothing raised anywhere
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cells", "busy", "stop", body={})
    assert r == {"cancelled": [], "running": False}
    assert (await c.execute("print('next')", cell="n"))["stdout"] == "next\n"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (("kernels", "nope", "cells", "c", "stop"), {}, 404),
        (("kernels", "{kid}", "cells", "c", "stop"), {"cell_id": "x"}, 400),
        (("kernels", "{kid}", "cells", "c", "stop"), {"reason": "x" * 500}, 400),
        (("kernels", "{kid}", "cells", "%F0%9F" * 100, "stop"), {}, 400),
    ],
)
async def test_rest_stop_cell_bad_input(harness, path, body, code):
    kid = await harness.start_kernel()
    parts = [p.format(kid=kid) for p in path]
    with pytest.raises(HTTPClientError) as err:
        await harness.api("POST", "jupyter-cancel", "api", *parts, body=body)
    assert err.value.code == code
    assert len(err.value.response.body) < 1000
