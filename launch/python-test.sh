#!/usr/bin/env bash
# The Python package's tests (python/tests): builds libSpargeC.so and the debug `sparge` for the target CPU
# (after `swift test` only the link is left to do), then runs pytest with .build/python-venv (made by
# launch/python-setup.sh, which .ci/run calls) or else python3. Tests whose packages are absent skip with
# a message; without pytest nothing runs and this says so. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/env.sh
python=.build/python-venv/bin/python
[ -x "$python" ] || python="$(command -v python3 || true)"
if [ -z "$python" ] || ! "$python" -c "import pytest" >/dev/null 2>&1; then
    echo "python-test: skipped: no python3 with pytest (bash launch/python-setup.sh installs one)"
    exit 0
fi
for product in SpargeC sparge; do
    swift build --product "$product" -Xswiftc -target-cpu -Xswiftc "$SPARGE_TARGET_CPU" 2>&1 | tail -n 1
done
export SPARGE_LIBRARY="$PWD/.build/debug/libSpargeC.so" SPARGE_BINARY="$PWD/.build/debug/sparge"
status=0
"$python" -m pytest -q -rsP python/tests "$@" || status=$?
# pytest's 5 means that no test was collected, which cannot be right here.
exit "$status"
