#!/usr/bin/env bash
# Verify a real TDX quote from the shared test vectors with the shroud-attest CLI.
#
#   examples/verify_vector.sh [CASE]        (default: v4-dstack-eventlog)
#
# Verification runs offline at the vector's own time (collateral expires, so "now" would fail).
# For the dstack case it also replays the event log against RTMR0-3 and applies
# examples/policy.toml, which pins that TD's measurements and its compose-hash event.
# Exit status is shroud-attest's: 0 accepted, 1 rejected, 2 usage error or unreadable input.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
vectors="${SHROUD_VECTORS:-$repo/../shared/vectors/tdx}"
case_name="${1:-v4-dstack-eventlog}"
dir="$vectors/$case_name"

if [[ -x "$repo/.venv/bin/shroud-attest" ]]; then
    attest=("$repo/.venv/bin/shroud-attest")
elif command -v shroud-attest >/dev/null; then
    attest=(shroud-attest)
else
    attest=(python3 -m attestation.cli)
fi

if [[ ! -f "$dir/quote.bin" ]]; then
    echo "no such vector: $dir" >&2
    exit 2
fi

# The time to verify at, from the vector's expected.json.
at="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["now"])' "$dir/expected.json")"

args=(verify "$dir/quote.bin" --collateral "$dir/collateral.json" --at "$at")
if [[ -f "$dir/event_log.json" ]]; then
    args+=(--event-log "$dir/event_log.json")
fi
if [[ "$case_name" == "v4-dstack-eventlog" ]]; then
    args+=(--policy "$here/policy.toml")
fi

echo "+ shroud-attest ${args[*]}" >&2
exec "${attest[@]}" "${args[@]}" "${@:2}"
