#!/usr/bin/env bash
# Ensures the test dependencies: Chromium (the e2e tests of `pacer report`
# and the live dashboard render pages in headless Chromium), redis-server
# (the shared-limits e2e tests start their own) and curl, installed with
# apt-get when missing, and the Python ones: a virtual environment at
# target/test-venv with the packages pinned in scripts/test-requirements.txt
# (the official openai and anthropic SDKs, which the e2e tests of
# `pacer serve` run against the gateway).
#
# Idempotent and quiet: it installs only when the venv is missing or the
# requirements file changed since the last successful install (a stamp file
# in the venv keeps the requirements' hash). On success it prints nothing and
# exits 0; `--print-python` prints the venv's python (absolute path).
# If it cannot install, it exits nonzero with one clear sentence on stderr:
# the tests must fail, never silently skip.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/scripts/test-requirements.txt"
venv="$root/target/test-venv"
py="$venv/bin/python"
stamp="$venv/.requirements.sha256"
log="$root/target/test-venv.log"

fail() {
    echo "scripts/test-deps.sh: $1" >&2
    exit 1
}

# curl is one of the gateway's clients in the e2e tests.
if ! command -v curl >/dev/null 2>&1; then
    { command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; } \
        || fail "curl is missing and cannot be installed here (apt-get as root is needed)."
    apt-get install -y -qq curl >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq curl >/dev/null 2>&1; } \
        || fail "curl is missing and 'apt-get install curl' failed."
fi

# redis-server: the e2e tests of --redis start their own on a free port.
if ! command -v redis-server >/dev/null 2>&1; then
    { command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; } \
        || fail "redis-server is missing and cannot be installed here (apt-get as root is needed)."
    apt-get install -y -qq redis-server >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq redis-server >/dev/null 2>&1; } \
        || fail "redis-server is missing and 'apt-get install redis-server' failed."
    command -v redis-server >/dev/null 2>&1 \
        || fail "redis-server was installed but is not on PATH."
fi

# Chromium renders `pacer report`'s page and the live dashboard in their e2e
# tests. `--print-chromium` prints its path (test.sh exports it as
# PACER_TEST_CHROMIUM).
find_chromium() { command -v chromium || command -v chromium-browser || true; }
if [[ -z "$(find_chromium)" ]]; then
    { command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; } \
        || fail "Chromium is missing and cannot be installed here (apt-get as root is needed): install the chromium package."
    mkdir -p "$root/target"
    apt-get install -y -qq chromium >"$root/target/chromium-install.log" 2>&1 \
        || { apt-get update -qq >>"$root/target/chromium-install.log" 2>&1 \
             && apt-get install -y -qq chromium >>"$root/target/chromium-install.log" 2>&1; } \
        || fail "Chromium is missing and 'apt-get install -y chromium' failed (see $root/target/chromium-install.log)."
    [[ -n "$(find_chromium)" ]] || fail "apt-get installed chromium but no chromium is on PATH."
fi
if [[ ${1:-} == --print-chromium ]]; then
    find_chromium
    exit 0
fi

[[ -f $req ]] || fail "cannot install the Python test dependencies: $req is missing."
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x $py && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    [[ ${1:-} == --print-python ]] && echo "$py"
    exit 0
fi

mkdir -p "$root/target"
: >"$log"
if [[ ! -x $py ]]; then
    rm -rf "$venv"
    command -v python3 >/dev/null 2>&1 \
        || fail "cannot install the Python test dependencies: python3 is not on PATH."
    python3 -m venv "$venv" >>"$log" 2>&1 \
        || fail "cannot create the Python virtual environment $venv with 'python3 -m venv' (see $log)."
fi
rm -f "$stamp"
"$py" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >>"$log" 2>&1 \
    || fail "cannot install the Python test dependencies from $req into $venv with pip (see $log; PyPI must be reachable)."
"$py" -c 'import openai, anthropic, prometheus_client' >>"$log" 2>&1 \
    || fail "the Python test dependencies were installed into $venv but do not import (see $log)."
echo "$want" >"$stamp"
[[ ${1:-} == --print-python ]] && echo "$py"
exit 0
