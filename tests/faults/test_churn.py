"""Churn: 10,000 instant operations from 4 threads started by 2 tabs. Every operation's events
on the stream are exactly started → ended; the running gauge returns to 0; nothing is listed
as running after the kernel shuts down."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

BASE = ("jupyter-cancel", "api")
PER_THREAD = 2500
#: Every N-th operation is a real process (``true``), the rest in-process scopes.
PROCESS_EVERY = 50


def _cell(tag: str) -> str:
    return (
        "import threading, jupyter_cancel as jc\n"
        "def churn():\n"
        f"    for i in range({PER_THREAD}):\n"
        f"        if i % {PROCESS_EVERY} == 0:\n"
        "            jc.start(['true'], display=False).wait(30)\n"
        "        else:\n"
        "            with jc.scope('instant'):\n"
        "                pass\n"
        f"threads_{tag} = [threading.Thread(target=churn) for _ in range(2)]\n"
        f"for t in threads_{tag}: t.start()\n"
    )


@pytest.mark.slow
async def test_ten_thousand_instant_operations_keep_their_order(harness, jp_fetch):
    ws = await harness.ws_fetch(*BASE, "events")
    await ws.read_message()  # snapshot
    kid = await harness.start_kernel()
    tab_a, tab_b = await harness.connect(kid), await harness.connect(kid)
    for tab, tag in ((tab_a, "a"), (tab_b, "b")):
        r = await tab.execute(_cell(tag), cell=f"churn-{tag}")
        assert r["reply"]["status"] == "ok", r
    total = 4 * PER_THREAD
    seq: dict[str, list[str]] = collections.defaultdict(list)
    sessions: dict[str, str] = {}
    ended = 0
    while ended < total:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 60))
        op = msg["operation"]
        seq[op["id"]].append(msg["event"])
        sessions[op["id"]] = op["client_session"]
        ended += msg["event"] == "ended"
    r = await tab_a.execute("for t in threads_a + threads_b: t.join()", cell="join", timeout=120)
    assert r["reply"]["status"] == "ok"
    bad = {k: v for k, v in seq.items() if v != ["started", "ended"]}
    assert len(seq) == total and not bad, list(bad.items())[:5]
    assert collections.Counter(sessions.values()) == {tab_a.session: total // 2, tab_b.session: total // 2}
    text = (await jp_fetch("metrics")).body.decode()
    assert "\njupyter_cancel_running_operations 0.0\n" in text
    await harness.api("DELETE", "api", "kernels", kid)
    ops = (await harness.api("GET", *BASE, "operations"))["operations"]
    assert [o for o in ops if o["state"] == "running"] == []
    ws.close()
