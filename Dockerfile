# syntax=docker/dockerfile:1
#
# docker build -t payrules .          (BuildKit; the default builder since Docker 23)
#
# The build context is filtered by .dockerignore; `bash scripts/check-image-context.sh` (run by
# CI) lays out exactly what the build stage's COPY lines bring in and builds it, since a missing
# file (migrations/, a declared bench) only shows up here as a failed `docker build`.

# Build stage: compile the release binary (fat LTO, see Cargo.toml's [profile.release]).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts, so a rebuild after a source change recompiles
# only payrules itself. A cache mount is not part of the image: the binary is copied out of it
# (and stripped) to /out, which the runtime stage copies from.
RUN --mount=type=cache,id=payrules-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=payrules-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=payrules-target,sharing=locked,target=/src/target \
    cargo build --release --locked --bin payrules \
    && install -D -m 0755 target/release/payrules /out/payrules \
    && strip /out/payrules

# Runtime stage: a small Debian with CA certificates, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 payrules \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/payrules --create-home payrules
COPY --from=build /out/payrules /usr/local/bin/payrules
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 10001:10001
# The state store defaults to `sqlite://payrules.db`, relative to this directory: the SQLite file
# is /var/lib/payrules/payrules.db. Mount a volume (or a PersistentVolumeClaim) here to keep it.
# Deliberately no `ENV PAYRULES_STATE_URL=...`: an image-level value could not be unset by a
# deployment, and setting both PAYRULES_STATE_URL and PAYRULES_STATE_URL_FILE (the URL kept as a
# secret file) is a configuration error.
WORKDIR /var/lib/payrules
VOLUME /var/lib/payrules
ENV PAYRULES_HTTP_ADDR=0.0.0.0:9464
# /metrics, /healthz and /readyz.
EXPOSE 9464
# `payrules health [URL]` exits 0 when http://127.0.0.1:9464/healthz answers 200.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["payrules", "health"]
# Last, so that a new VERSION does not invalidate the layers above.
# docker build --build-arg VERSION=$(git describe --always --dirty) --build-arg SOURCE_URL=https://... -t payrules .
ARG VERSION=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="payrules" \
      org.opencontainers.image.description="Worker that consumes commercetools messages from Pub/Sub or SQS and runs payment rules (release for fulfillment, cancel orphaned authorizations)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["payrules"]
CMD ["run"]
