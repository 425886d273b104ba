#!/usr/bin/env bash
# The test suite: set up .venv with the test extra if needed, then run pytest.
# -rs lists every skipped test with its reason, so nothing is skipped silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh test
exec .venv/bin/python -m pytest -q -rs tests "$@"
