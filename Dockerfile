# ferrokv container image.
#
#   docker build -t ferrokv .                       # build from source (needs the Rust image)
#   docker run -e FERROKV_NODE_ID=1 -e FERROKV_INITIAL_MEMBERS=1=127.0.0.1:7070 -p 8080:8080 ferrokv
#
# Stages, in this order so that the classic (non-BuildKit) builder, which builds every stage up
# to the target, never needs the Rust image for --target runtime-prebuilt:
#   runtime-base      Debian slim, non-root user, ports, volume, health check (no binary)
#   runtime-prebuilt  runtime-base + binaries from the build context's bin/ (built on the host;
#                     used by scripts/image.sh, see docs/containers.md)
#   builder           compiles the binaries listed in BINARIES with cargo --locked --release
#   runtime           runtime-base + the builder's binaries (the default target)

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 ferrokv \
 && useradd --system --uid 10001 --gid ferrokv --home-dir /var/lib/ferrokv --no-create-home \
      --shell /usr/sbin/nologin ferrokv \
 && install -d -o ferrokv -g ferrokv -m 0750 /var/lib/ferrokv
COPY deploy/docker/ferrokv-healthcheck /usr/local/bin/ferrokv-healthcheck
# Listen on every interface inside the container. A cluster member must also set
# FERROKV_ADVERTISE_GRPC (and FERROKV_ADVERTISE_HTTP) to an address the other members can reach.
ENV FERROKV_HTTP_ADDR=0.0.0.0:8080 \
    FERROKV_GRPC_ADDR=0.0.0.0:7070 \
    FERROKV_DATA_DIR=/var/lib/ferrokv
EXPOSE 8080 7070
VOLUME ["/var/lib/ferrokv"]
WORKDIR /var/lib/ferrokv
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["ferrokv-healthcheck", "/healthz"]
ENTRYPOINT ["ferrokv"]
CMD ["serve"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ferrokv" \
      org.opencontainers.image.description="Distributed, in-memory, strongly consistent key-value store (Raft)" \
      org.opencontainers.image.source="https://github.com/ferrokv/ferrokv" \
      org.opencontainers.image.url="https://github.com/ferrokv/ferrokv" \
      org.opencontainers.image.documentation="https://github.com/ferrokv/ferrokv/blob/main/docs/containers.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="ferrokv" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

FROM runtime-base AS runtime-prebuilt
# The context holds bin/<binary> for each binary built on the host (scripts/image.sh). The
# health probe is listed too so that this COPY also succeeds, as a no-op, when the classic
# builder passes through this stage on its way to the default target without a bin/ directory.
COPY deploy/docker/ferrokv-healthcheck bin* /usr/local/bin/

FROM ${RUST_IMAGE} AS builder
# Space-separated binaries of the workspace to build and ship, e.g. "ferrokv ferrokv-operator".
ARG BINARIES="ferrokv"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY node node
RUN set -eu; \
    bins=""; for b in $BINARIES; do bins="$bins --bin $b"; done; \
    cargo build --locked --release $bins; \
    mkdir -p /out; \
    for b in $BINARIES; do install -m 0755 "target/release/$b" /out/; done

FROM runtime-base AS runtime
COPY --from=builder /out/ /usr/local/bin/
