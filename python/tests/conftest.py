"""Shared helpers of the spargering tests: what to skip where a package or the library is missing, and the
paths of the library and of the `sparge` binary (SPARGE_LIBRARY, SPARGE_BINARY, else the checkout's
.build/debug, which `swift test` builds, or .build/release)."""
import os
import shutil
import sys

import pytest

from inputs import smooth  # noqa: F401  (the tests import it from here)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(CHECKOUT, "python"))


def built(name):
    for kind in ("debug", "release"):
        path = os.path.join(CHECKOUT, ".build", kind, name)
        if os.path.exists(path):
            return path
    return None


if not os.environ.get("SPARGE_LIBRARY") and built("libSpargeC.so"):
    os.environ["SPARGE_LIBRARY"] = built("libSpargeC.so")


def need(module):
    """The module, or a skip that names it."""
    return pytest.importorskip(module, reason=f"{module} is not installed (bash .ci/run installs it)")


@pytest.fixture(scope="session")
def np():
    return need("numpy")


@pytest.fixture(scope="session")
def torch():
    return need("torch")


@pytest.fixture(scope="session")
def spargering(np):
    if not os.environ.get("SPARGE_LIBRARY"):
        pytest.skip("libSpargeC.so is not built (swift build --product SpargeC, or bash launch/setup.sh)")
    import spargering
    return spargering


@pytest.fixture(scope="session")
def sparge_binary():
    path = os.environ.get("SPARGE_BINARY") or built("sparge")
    if not path:
        pytest.skip("the sparge binary is not built (swift build, or bash launch/setup.sh)")
    return path


@pytest.fixture(scope="session")
def mpirun():
    if not shutil.which("mpirun"):
        pytest.skip("mpirun is not installed (bash launch/setup.sh installs OpenMPI)")
    need("mpi4py")
    return shutil.which("mpirun")
