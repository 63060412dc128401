import pytest

from tests.helpers.kernel import Kernel


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()
