# Build stage: compile the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin payrules

# Runtime stage: a small Debian with CA certificates, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/payrules --create-home payrules
COPY --from=build /src/target/release/payrules /usr/local/bin/payrules
USER payrules
WORKDIR /var/lib/payrules
ENV PAYRULES_STATE_URL=sqlite:///var/lib/payrules/payrules.db
ENTRYPOINT ["payrules"]
CMD ["run"]
