#!/usr/bin/env bash
# The test suite: set up .venv with the test extra if needed, then run pytest.
# -rs lists every skipped test with its reason, so nothing is skipped silently.
# -n 2 --dist loadfile: two pytest-xdist workers (the machines have 2 cores; one
# worker compiling XLA uses ~1.2), each taking whole test files so that module
# fixtures and the per-worker compilation cache are shared within a file;
# --no-loadscope-reorder keeps tests/conftest.py's longest-files-first order (xdist
# would otherwise sort files by their number of tests). --durations=25 prints the
# slowest tests, to keep the suite's time in view.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh test
exec .venv/bin/python -m pytest -q -rs -n 2 --dist loadfile --no-loadscope-reorder --durations=25 tests "$@"
