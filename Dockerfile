# syntax=docker/dockerfile:1
# The shroud-bridge container image. docs/deployment.md, "Build and publish the image", says how
# to build it reproducibly and how its digest reaches --image-digest.
#
# The base is pinned by digest, never by tag alone: python:3.11.10-slim-bookworm as published on
# Docker Hub (the same tag@digest pair appears in public Renovate-maintained files, e.g.
# nalabelle/build images/digests.Dockerfile). To move to a newer base, change tag and digest
# together, from `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG BASE_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# --- the wheel, built reproducibly from this source tree ---------------------------------------
FROM ${BASE_IMAGE} AS wheel
# A fixed build time (BuildKit also uses it for image timestamps with rewrite-timestamp=true).
ARG SOURCE_DATE_EPOCH=315532800
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/build.lock requirements/build.lock
RUN pip install --require-hashes --no-deps -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY scripts/build-wheel.sh scripts/build-wheel.sh
COPY attestation/ attestation/
COPY bridge/ bridge/
COPY shroud_sdk/ shroud_sdk/
RUN scripts/build-wheel.sh python /dist

# --- the runtime image --------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG SOURCE_DATE_EPOCH=315532800
# SOURCE_DATE_EPOCH also makes pip compile hash-checked .pyc files, which do not embed times.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/var/cache/shroud-bridge \
    SHROUD_BRIDGE_LISTEN=0.0.0.0:8443
# Every runtime dependency, exactly as locked: a changed artifact fails the hash check.
COPY requirements/bridge.lock /tmp/bridge.lock
RUN pip install --require-hashes --no-deps -r /tmp/bridge.lock && rm /tmp/bridge.lock
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist
# An unprivileged user; the only writable paths are the runtime-log state dir (mount the TD's
# /run/shroud-bridge tmpfs there) and the collateral cache (mount a tmpfs or a volume). The
# root filesystem can then be mounted read-only (docker run --read-only, readOnlyRootFilesystem).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin shroud \
    && install -d -o 10001 -g 10001 -m 0700 /run/shroud-bridge /var/cache/shroud-bridge
USER 10001:10001
EXPOSE 8443
# Configuration comes from SHROUD_BRIDGE_* variables or flags; the deployment passes the digest
# of this very image as SHROUD_BRIDGE_IMAGE_DIGEST (or --image-digest), measured into RTMR3.
ENTRYPOINT ["shroud-bridge"]
