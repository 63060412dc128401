"""Installed is enough: a Python kernel that no jupyter_server started (jupyter_client, nbclient,
papermill, ``jupyter console``, VS Code running the kernelspec's argv) loads the kernel
extension by itself, and every kernel-level trigger ends the work its cells started — 0
survivors of a tree with a member in a session of its own and a double-fork daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from _jupyter_cancel_autoload import ARGUMENT, OFF_MARKER, add_argument, is_kernel_command
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

from jupyter_cancel.kernel.autoload import ARGUMENTS
from tests.helpers.foreign import MEMBERS, STARTS
from tests.helpers.kernel import Kernel
from tests.helpers.procs import TREE, left_alive, wait_ready
from tests.helpers.wait import until

#: A cell that starts the tree (5 members: setsid root + child, a double-fork daemon...) and
#: waits on it, as a long build or a model server would keep the cell busy.
START = (
    "import subprocess, sys\n"
    "a = subprocess.Popen([sys.executable, {tree!r}, 'setsid', {ready!r}], start_new_session=True)\n"
    "b = subprocess.Popen([sys.executable, {tree!r}, 'daemon', {ready!r}])\n"
)
BUSY = START + "a.wait()\n"
JUPYTER_CANCEL = str(Path(sys.executable).with_name("jupyter-cancel"))
LOADED = "sorted(get_ipython().extension_manager.loaded)"


def _start(tmp_path: Path, busy: bool = True) -> tuple[str, Path]:
    ready = tmp_path / "ready"
    return (BUSY if busy else START).format(tree=TREE, ready=str(ready)), ready


def _gone(pids: list[int]) -> None:
    until(lambda: not left_alive(pids), 30, f"survivors of {pids}: {left_alive(pids)}")


# -- which processes get the option -------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "kernel"),
    [
        (["python", "-m", "ipykernel_launcher", "-f", "k.json"], True),
        (["python", "-m", "ipykernel", "-f", "k.json"], True),
        (["/usr/bin/python3", "-X", "frozen_modules=off", "-m", "ipykernel_launcher", "--ip=1"], True),
        (["python", "-Xdev", "-u", "-m", "ipykernel_launcher"], True),
        (["python", "/env/lib/site-packages/ipykernel_launcher.py", "-f", "k.json"], True),
        (["python", "-c", "import ipykernel_launcher"], False),
        (["python", "script.py", "-m", "ipykernel_launcher"], False),
        (["python", "-m", "pip", "install", "ipykernel"], False),
        (["python", "-W", "ignore", "ipykernel_launcher"], False),
        (["python"], False),
        (["python", "-m"], False),
    ],
)
def test_only_an_ipykernel_command_line_is_a_kernel(argv, kernel):
    assert is_kernel_command(argv) is kernel


def test_the_option_is_added_once_and_is_the_servers():
    assert ARGUMENTS == [ARGUMENT]
    argv = ["-m", "-f", "k.json"]
    assert add_argument(argv) and argv[-1] == ARGUMENT
    assert not add_argument(argv) and argv.count(ARGUMENT) == 1  # a server already passed it


def test_other_python_processes_are_untouched():
    probe = "import sys; print(sys.argv[1:], '_jupyter_cancel_autoload' in sys.modules)"
    # Most never even import the helper (the .pth looks for "ipykernel" in the command line)...
    plain = subprocess.run([sys.executable, "-c", probe, "x"], capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "['x'] False"
    # ...and one that mentions it without being a kernel keeps its arguments.
    named = subprocess.run(
        [sys.executable, "-c", probe, "ipykernel"], capture_output=True, text=True, check=True
    )
    assert named.stdout.strip().startswith("['ipykernel']")


# -- kernels started without a server ---------------------------------------------------------
def test_a_kernel_started_by_jupyter_client_loads_the_extension_once():
    k = Kernel(installed_only=True)
    try:
        assert "jupyter_cancel.kernel.autoload" in k.value(LOADED)
        assert k.value(f"__import__('sys').argv.count({ARGUMENT!r})") == 1
    finally:
        k.close()


@pytest.fixture
def bystander(tmp_path):
    """The same tree command, started by the test itself: never ours to end."""
    ready = tmp_path / "bystander"
    proc = subprocess.Popen([sys.executable, TREE, "child", str(ready)])
    pids = wait_ready(ready, 1, timeout=30)
    yield pids
    assert left_alive(pids) == pids, "a look-alike process outside the kernel was touched"
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("trigger", ["re-run", "interrupt", "restart", "shutdown", "kernel SIGKILL"])
def test_every_kernel_trigger_ends_the_tree_without_a_server(trigger, tmp_path, bystander):
    code, ready = _start(tmp_path, busy=trigger != "re-run")
    k = Kernel(installed_only=True)
    try:
        msg = k.send(code, cell="work")
        pids = wait_ready(ready, MEMBERS, timeout=30)
        if trigger == "re-run":  # a client that sends metadata.cellId (JupyterLab, VS Code)
            assert k.collect(msg).ok
            assert k.execute("pass", cell="work").ok
        elif trigger == "interrupt":
            k.km.interrupt_kernel()
            assert not k.collect(msg, timeout=60).ok  # the cell was interrupted
        elif trigger == "restart":
            k.km.restart_kernel(now=False)  # a shutdown_request with restart, as clients send it
        elif trigger == "shutdown":
            k.kc.stop_channels()
            k.km.shutdown_kernel(now=False)
        else:
            os.kill(k.pid, signal.SIGKILL)
        _gone(pids)
    finally:
        k.close()


def test_the_kernelspec_command_run_by_hand_as_vs_code_does(tmp_path, bystander):
    """No KernelManager: the kernelspec's argv with a connection file, a client that connects
    to it, then a shutdown request and the kernel's exit."""
    from jupyter_client import BlockingKernelClient
    from jupyter_client.connect import write_connection_file

    connection, _ = write_connection_file(str(tmp_path / "kernel.json"), ip="127.0.0.1")
    kernel = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", connection])
    client = BlockingKernelClient(connection_file=connection)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        code, ready = _start(tmp_path, busy=False)
        assert client.execute_interactive(code, timeout=60)["content"]["status"] == "ok"
        pids = wait_ready(ready, MEMBERS, timeout=30)
        client.shutdown()
        assert kernel.wait(timeout=60) == 0
        _gone(pids)
    finally:
        client.stop_channels()
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()


def test_switched_off_the_tree_outlives_the_kernel_as_in_stock_jupyter(tmp_path):
    """The switch is real: with it, the same shutdown leaves the tree running."""
    code, ready = _start(tmp_path, busy=False)
    k = Kernel(installed_only=True, extra_env={"JUPYTER_CANCEL_KERNEL_EXTENSION": "0"})
    pids: list[int] = []
    try:
        assert k.execute(code).ok
        pids = wait_ready(ready, MEMBERS, timeout=30)
        k.close()
        assert left_alive(pids), "without the extension a shutdown leaves the tree (stock)"
    finally:
        k.close()
        for pid in left_alive(pids):
            os.kill(pid, signal.SIGKILL)
        _gone(pids)


def _notebook(code: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('setup')"), nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.mark.parametrize("interrupt_on_timeout", [False, True])
def test_an_nbclient_timeout_ends_the_cells_tree(interrupt_on_timeout, tmp_path):
    """nbclient (and ``jupyter nbconvert --execute``) sends no cell ids: each execution is a run
    of its own, and a timeout interrupts the kernel or shuts it down."""
    code, ready = _start(tmp_path)
    client = NotebookClient(
        _notebook(code), timeout=20, kernel_name="python3", interrupt_on_timeout=interrupt_on_timeout
    )
    # (Interrupted, the cell ends in a KeyboardInterrupt; otherwise the kernel is shut down.)
    with pytest.raises(CellExecutionError if interrupt_on_timeout else CellTimeoutError):
        client.execute()
    pids = wait_ready(ready, MEMBERS, timeout=0.1)  # it was up before the timeout
    _gone(pids)


def test_a_notebook_that_finishes_leaves_nothing_behind(tmp_path):
    papermill = pytest.importorskip("papermill")
    code, ready = _start(tmp_path, busy=False)  # a tree left running by the last cell
    # (The cell returns once its tree is up, as a cell that starts a server does.)
    code += f"from pathlib import Path\nfrom tests.helpers.procs import wait_ready\nwait_ready(Path({str(ready)!r}), {MEMBERS}, 60)\n"
    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(_notebook(code), source)
    papermill.execute_notebook(
        str(source), str(out), kernel_name="python3", progress_bar=False, log_output=False
    )
    pids = wait_ready(ready, MEMBERS, timeout=0.1)
    _gone(pids)


def test_a_papermill_timeout_ends_the_cells_tree(tmp_path):
    papermill = pytest.importorskip("papermill")
    code, ready = _start(tmp_path)
    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(_notebook(code), source)
    with pytest.raises(Exception, match="(?i)timed out|timeout"):
        papermill.execute_notebook(
            str(source),
            str(out),
            kernel_name="python3",
            execution_timeout=20,
            progress_bar=False,
            log_output=False,
        )
    pids = wait_ready(ready, MEMBERS, timeout=0.1)
    _gone(pids)


# -- switched off -------------------------------------------------------------------------------
def test_switched_off_for_one_kernel_by_its_environment():
    k = Kernel(installed_only=True, extra_env={"JUPYTER_CANCEL_KERNEL_EXTENSION": "0"})
    try:
        assert "jupyter_cancel.kernel.autoload" not in k.value(LOADED)
        assert ARGUMENT not in k.value("__import__('sys').argv")
    finally:
        k.close()


def test_switched_off_for_the_environment_and_back_on():
    cli = [JUPYTER_CANCEL, "autoload"]
    assert not os.path.exists(OFF_MARKER), "autoload is off in this environment: tests need it on"
    try:
        off = subprocess.run([*cli, "off"], capture_output=True, text=True, check=True)
        assert off.stdout.strip().endswith(": off")
        k = Kernel(installed_only=True)
        try:
            assert "jupyter_cancel.kernel.autoload" not in k.value(LOADED)
        finally:
            k.close()
    finally:
        on = subprocess.run([*cli, "on"], capture_output=True, text=True, check=True)
    assert on.stdout.strip().endswith(": on")
    k = Kernel(installed_only=True)
    try:
        assert "jupyter_cancel.kernel.autoload" in k.value(LOADED)
    finally:
        k.close()


def test_the_switch_command_rejects_what_it_does_not_know():
    out = subprocess.run([JUPYTER_CANCEL, "autoload", "sideways"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage: jupyter-cancel autoload" in out.stderr
    assert "sideways" not in out.stderr  # the input is not echoed back


# -- other languages, without a server: the provisioner -------------------------------------------
def _bash_spec(tmp_path: Path, provisioner: bool) -> str:
    """A copy of the test bash kernel's spec, opting in to our provisioner or not."""
    specs = KernelSpecManager().find_kernel_specs()
    if "bash" not in specs:
        pytest.skip("bash_kernel is not installed (scripts/setup.sh installs it)")
    name = "bash-jc" if provisioner else "bash-plain"
    target = tmp_path / "kernels" / name
    shutil.copytree(specs["bash"], target)
    spec = json.loads((target / "kernel.json").read_text())
    if provisioner:
        spec.setdefault("metadata", {})["kernel_provisioner"] = {"provisioner_name": "jupyter-cancel"}
    (target / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(tmp_path), os.environ.get("JUPYTER_PATH", "")])
    return name


@pytest.fixture
def jupyter_path():
    saved = os.environ.get("JUPYTER_PATH")
    yield
    if saved is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = saved


@pytest.mark.parametrize("provisioner", [True, False])
def test_a_bash_notebook_run_by_nbclient_leaves_nothing_with_the_provisioner(
    provisioner, tmp_path, jupyter_path
):
    """bash_kernel's background jobs (a setsid tree, a double-fork daemon) after the notebook
    ends: all gone with the provisioner; without it they outlive the kernel, as in stock Jupyter."""
    name = _bash_spec(tmp_path, provisioner)
    ready = tmp_path / "ready"
    code = STARTS["bash"].format(py=sys.executable, tree=TREE, ready=ready)
    # (The cell returns once the jobs are up: the tests' own wait, on the ready file's events.)
    code += (
        f"\n{sys.executable} -c 'from pathlib import Path; from tests.helpers.procs import wait_ready; "
        f'wait_ready(Path("{ready}"), {MEMBERS}, 60)\''
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": name, "display_name": name, "language": "bash"}
    NotebookClient(nb, timeout=120, kernel_name=name).execute()
    pids = wait_ready(ready, MEMBERS, timeout=0.1)
    try:
        if provisioner:
            _gone(pids)
        else:
            assert left_alive(pids), "without the provisioner the background jobs outlive the kernel"
    finally:
        for pid in left_alive(pids):
            os.kill(pid, signal.SIGKILL)
        _gone(pids)
