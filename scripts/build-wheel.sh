#!/usr/bin/env bash
# Build the shroud-sdk wheel reproducibly: same source, same wheel, byte for byte.
#
# Usage: scripts/build-wheel.sh PYTHON [OUTDIR]   (make wheel; the Dockerfile's wheel stage)
#
# SOURCE_DATE_EPOCH fixes every timestamp in the archive (setuptools' bdist_wheel honours it);
# without it the wheel records each file's mtime, so two checkouts of one commit differ. It
# defaults to the commit's time, or to 1980-01-01 (the earliest a zip can record) outside git.
# The build runs without isolation, against the build tools already installed (pinned with
# hashes in requirements/build.lock), so nothing is fetched at build time.
set -euo pipefail
python=${1:?usage: build-wheel.sh PYTHON [OUTDIR]}
outdir=${2:-dist}
case "$outdir" in /*) ;; *) outdir="$PWD/$outdir" ;; esac
cd "$(dirname "$0")/.."
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
fi
export SOURCE_DATE_EPOCH
rm -rf build ./*.egg-info
"$python" -m pip wheel --quiet --no-deps --no-build-isolation --no-cache-dir -w "$outdir" .
rm -rf build ./*.egg-info
