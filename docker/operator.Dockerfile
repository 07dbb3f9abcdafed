# The Ryzanstein operator. Built by `make image` as ryzanstein/operator:<chart appVersion>, the
# chart's default operator image (charts/ryzanstein/values.yaml `image`).
#
# Build:  docker build -f docker/operator.Dockerfile -t ryzanstein/operator:0.1.0 .
# The chart runs it with --config, --http-addr, --log-format and the --leader-elect* flags
# (charts/ryzanstein/README.md, "Operator contract").

# --- build --------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ryzanstein-operator --bin ryzanstein-operator \
    && install -D -m 0755 target/release/ryzanstein-operator /out/ryzanstein-operator

# --- runtime ------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager; `nonroot` runs
# as uid/gid 65532, the ids the chart's securityContext sets. Same Debian release as the builder.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ryzanstein-operator /usr/local/bin/ryzanstein-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ryzanstein-operator"]
