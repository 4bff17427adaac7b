#!/usr/bin/env bash
# Every `pacer run` benchmark, one after the other (about 9 minutes on 2 cores).
# Results: bench/run/results/*.json; a one-line verdict each on stdout.
#   cargo build --release -p pacer-cli && bench/run/run_all.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./pacing.sh rpm
./pacing.sh tpm
./overhead.sh
./memory.sh
./resume.sh
KILL_AFTER=900000 TAG=late ./resume.sh
