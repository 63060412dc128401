from ..core.errors import JupyterCancelError


class LLMError(JupyterCancelError):
    """An LLM endpoint or program failed in a way the user can act on (message says how)."""
