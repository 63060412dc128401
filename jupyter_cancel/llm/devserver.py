"""A small OpenAI-compatible streaming server for demos and tests (not a model).

It behaves like a real one where cancellation is concerned: tokens come slowly, a
client that disconnects is noticed at once (between tokens it waits in ``select`` on the
socket), and it stops generating then. ``GET /stats`` reports what it saw.

    python -m jupyter_cancel.llm.devserver [--port 0] [--delay 0.05] [--tokens 400]
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = (
    "Cancellation is a feature . A notebook that starts work should be able to stop it : the process tree , "
    "the stream , the build . Closing the tab , re-running the cell or pressing stop ends the work and frees "
    "the CPU and GPU it held . "
)


class _Handler(BaseHTTPRequestHandler):
    server: DevServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, code: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client read what it wanted and left

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "demo", "object": "model"}]})
        elif self.path == "/stats":
            self._json(200, self.server.stats())
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": "body is not JSON"})
            return
        words = TEXT.split()
        count = int(body.get("max_tokens") or self.server.tokens)
        if not body.get("stream"):
            text = " ".join(words[i % len(words)] for i in range(count))
            self._json(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.server.begin()
        sent = 0
        try:
            for i in range(count):
                if self._gone(self.server.delay):
                    self.server.disconnected(sent)
                    return
                chunk = {"choices": [{"index": 0, "delta": {"content": words[i % len(words)] + " "}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                sent += 1
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.server.finished(sent)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected(sent)
        finally:
            self.close_connection = True

    def _gone(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds; True as soon as the client has disconnected."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class DevServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, delay: float = 0.05, tokens: int = 400) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay = delay
        self.tokens = tokens
        self._lock = threading.Condition()
        self._stats: dict[str, Any] = {"streams": 0, "active": 0, "completed": [], "disconnects": []}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def begin(self) -> None:
        with self._lock:
            self._stats["streams"] += 1
            self._stats["active"] += 1
            self._lock.notify_all()

    def disconnected(self, sent: int) -> None:
        with self._lock:
            self._stats["active"] -= 1
            self._stats["disconnects"].append({"time": time.time(), "tokens_sent": sent})
            self._lock.notify_all()

    def wait_for(self, key: str, count: int, timeout: float) -> bool:
        """Block until ``streams`` or ``disconnects``/``completed`` reaches ``count`` (or time out)."""

        def reached() -> bool:
            value = self._stats[key]
            return (value if isinstance(value, int) else len(value)) >= count

        with self._lock:
            return self._lock.wait_for(reached, timeout)

    def finished(self, sent: int) -> None:
        with self._lock:
            self._stats["active"] -= 1
            self._stats["completed"].append({"time": time.time(), "tokens_sent": sent})
            self._lock.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._stats))

    def start_background(self) -> DevServer:
        threading.Thread(target=self.serve_forever, name="llm-devserver", daemon=True).start()
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between tokens")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per reply")
    args = parser.parse_args()
    server = DevServer(args.port, args.delay, args.tokens)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
