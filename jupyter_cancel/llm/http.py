"""Stream a chat completion from an OpenAI-compatible endpoint (ollama, llama.cpp's server,
vLLM, ...). Cancelling shuts the socket down at once, even while a read is blocked, so the
server sees the disconnect and stops generating."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ..core import api
from ..core.errors import Cancelled
from ..core.scope import CancelScope
from .config import llm_timeout
from .errors import LLMError
from .rate import TokenRate


def _shutdown(response: httpx.Response) -> None:
    """Unblock a read in another thread: shutdown() wakes recv(), close() alone may not."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError as err:
            raise LLMError(f"the server sent a line that is not JSON: {data[:200]!r}") from err


def stream_chat(
    messages: str | Sequence[dict[str, str]],
    *,
    url: str = "http://127.0.0.1:11434/v1",
    model: str = "llama3",
    api_key: str | None = None,
    timeout: float | None = None,
    name: str | None = None,
    connect_timeout: float = 10.0,
    **params: Any,
) -> str:
    """Stream ``/chat/completions`` from ``url`` as an operation; return the text.

    Tokens appear live with tokens/s; stop, re-run, interrupt or the ``llm_timeout``
    close the connection within milliseconds. Raises ``Cancelled`` then, and ``LLMError``
    with a clear message for a bad URL, a refused connection or a reply that does not stream.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    limit = llm_timeout(timeout)
    endpoint = url.rstrip("/") + "/chat/completions"
    if not endpoint.startswith(("http://", "https://")):
        raise LLMError(f"url must start with http:// or https://, not {url!r}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": model, "messages": list(messages), "stream": True, **params}
    scope: CancelScope = api.scope(name or f"{model} @ {url}", timeout=limit, kind="llm")
    api.host().show(scope.operation)
    with scope:
        text = _stream(scope, endpoint, body, headers, httpx.Timeout(limit, connect=connect_timeout))
    api.host().finished(scope.operation)
    return text


def _stream(
    scope: CancelScope, endpoint: str, body: dict[str, Any], headers: dict[str, str], timeout: httpx.Timeout
) -> str:
    """The streamed reply's text, fed to the scope's operation as it comes."""
    parts: list[str] = []
    rate = TokenRate(scope.operation)
    try:
        with httpx.Client(timeout=timeout) as client:
            with client.stream("POST", endpoint, json=body, headers=headers) as response:
                scope.on_cancel(lambda: _shutdown(response))
                _check(response, endpoint)
                for event in _events(response):
                    scope.raise_if_cancelled()
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            parts.append(text)
                            rate.add(text)
                            scope.operation.feed(text)
    except Cancelled:
        raise
    except httpx.ConnectError as err:
        scope.raise_if_cancelled()
        raise LLMError(f"could not connect to {endpoint}: {err}. Is the server running?") from err
    except httpx.TimeoutException as err:
        scope.raise_if_cancelled()
        raise LLMError(f"{endpoint} timed out: {err}") from err
    except (httpx.HTTPError, httpx.StreamError, OSError) as err:
        # The socket we shut down on cancel reads as an error, and a cancel that lands
        # between the headers and the first read finds the stream closed.
        scope.raise_if_cancelled()
        raise LLMError(f"streaming from {endpoint} failed: {err}") from err
    scope.raise_if_cancelled()
    rate.report()
    return "".join(parts)


def _check(response: httpx.Response, endpoint: str) -> None:
    if response.status_code >= 400:
        raise LLMError(f"{endpoint} answered {response.status_code}: {_preview(response)}")
    kind = response.headers.get("content-type", "")
    if "text/event-stream" not in kind:
        raise LLMError(f"{endpoint} did not stream (content-type {kind or 'none'}): {_preview(response)!r}")


def _preview(response: httpx.Response, limit: int = 300) -> str:
    """The start of a body, without reading all of it."""
    for chunk in response.iter_bytes(limit):
        return chunk[:limit].decode(errors="replace")
    return ""
