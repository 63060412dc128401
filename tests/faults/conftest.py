"""The fault suite runs against the same real server and kernels as tests/server."""

from tests.server.conftest import *  # noqa: F403
