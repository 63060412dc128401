"""LLM workloads as operations: CLI token streams, OpenAI-compatible HTTP streams, batches."""

from .batch import BatchResult as BatchResult
from .batch import batch as batch
from .cli import stream_cli as stream_cli
from .config import llm_timeout as llm_timeout
from .errors import LLMError as LLMError
from .http import stream_chat as stream_chat

__all__ = ["BatchResult", "LLMError", "batch", "llm_timeout", "stream_chat", "stream_cli"]
