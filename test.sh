#!/usr/bin/env bash
# The test command (README): formatting, lints, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The e2e tests of `pacer serve` drive the official Python SDKs, and the one of
# `pacer report` headless Chromium: install them
# (once; again only when scripts/test-requirements.txt changes).
PACER_TEST_PYTHON="$(scripts/test-deps.sh --print-python)"
export PACER_TEST_PYTHON
# The e2e test of `pacer report` renders it in headless Chromium.
PACER_TEST_CHROMIUM="$(scripts/test-deps.sh --print-chromium)"
export PACER_TEST_CHROMIUM
cargo test --workspace
