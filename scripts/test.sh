#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Sets everything up, then:
# generated-code check, lint, and the whole pytest suite (slow end-to-end tests included).
# A developer's fast loop: .venv/bin/pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_proto.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check power_daemon trainer collector parawatt tests bench
exec .venv/bin/pytest "$@"
