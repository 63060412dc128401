"""Build a process tree of a given shape; every member appends its pid to READY when up.

    python tree.py MODE READY

Modes: child, grandchild, zombie, setsid, daemon, ignore_term, fork_on_term, slow_term, three, envclear, exit_now,
chainN (N deep), wideN (N wide, half setsid).
Members sleep until signalled. Nothing here sleeps to "wait for readiness": the test reads READY.
"""

import os
import signal
import sys
import time


def announce(ready):
    fd = os.open(ready, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)


def park():
    while True:
        signal.pause()


def fork(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def main(mode, ready):
    if mode.startswith("chain"):
        # chainN: N processes, each the parent of the next (a deep tree).
        for _ in range(int(mode[5:]) - 1):
            if os.fork() != 0:
                break
        announce(ready)
        park()
    if mode.startswith("wide"):
        # wideN: a root and N - 1 children, every other one in a session of its own.
        for i in range(int(mode[4:]) - 1):
            fork(lambda i=i: (os.setsid() if i % 2 else None, announce(ready), park()))
        announce(ready)
        park()
    if mode == "zombie":
        # A child that exits at once and is never reaped: a zombie member of the tree (after the
        # root dies it is reparented, and reaped whenever its new parent gets to it).
        child = fork(lambda: None)
        os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # it exited, and stays unreaped
        announce(ready)
        fd = os.open(ready, os.O_WRONLY | os.O_APPEND)
        os.write(fd, f"{child}\n".encode())
        os.close(fd)
        park()
    if mode == "exit_now":
        announce(ready)
        return
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        announce(ready)
        park()
    if mode == "fork_on_term":

        def on_term(*_):
            # Fork a fresh child as we die: a process forking while the tree is killed.
            r, w = os.pipe()

            def late():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                announce(ready + ".late")
                os.write(w, b"x")
                park()

            fork(late)
            os.read(r, 1)  # exit only once the late child is up
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
        announce(ready)
        park()
    if mode == "slow_term":
        # Honours SIGTERM, but takes 0.3 s to shut down (flushing, saving) before it exits.
        signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), os._exit(0)))
        announce(ready)
        park()
    if mode == "child":
        announce(ready)
        park()
    if mode == "grandchild":
        fork(lambda: (announce(ready), park()))
        announce(ready)
        park()
    if mode in ("setsid", "three"):

        def grand():
            os.setsid()
            announce(ready)
            park()

        def child():
            fork(grand)
            announce(ready)
            park()

        fork(child)
        announce(ready)
        park()
    if mode in ("daemon", "envclear"):

        def daemon():
            os.setsid()

            # classic double fork: the grandchild is reparented to init
            def grand():
                if mode == "envclear":
                    os.execve(sys.executable, [sys.executable, __file__, "child", ready], {})
                announce(ready)
                park()

            fork(grand)
            os._exit(0)

        fork(daemon)
        announce(ready)
        park()
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
