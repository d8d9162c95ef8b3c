# shoal's container image: the one `shoal` binary, for every role (node, seed, manager, CLI).
#
#   docker build -t shoal .
#   docker run -d --network host -v shoal-data:/var/lib/shoal shoal node --upstream …
#
# Build arguments:
#   BUILDER_IMAGE  the stage that compiles shoal: a Rust toolchain (edition 2024, so Rust 1.85
#                  or newer) with a C compiler (ring and SQLite build C code). rust:1-bookworm.
#   BASE_IMAGE     the final stage: glibc and libgcc_s are all the binary needs (CA certificates
#                  are copied from the builder). gcr.io/distroless/cc-debian12; debian:bookworm-slim
#                  works too.
#   CARGO_PROFILE_RELEASE_DEBUG  `false` (default) builds without line tables, which makes the
#                  binary about 40 MiB instead of 200; `line-tables-only` keeps them.
#
# The image runs as uid/gid 65532 (distroless's `nonroot`), with the data directory
# /var/lib/shoal a volume owned by that user, so the root filesystem can be read-only. Roles that
# write host files (the chart's init container writing /etc/containerd/certs.d, a node whose data
# dir is a root-owned hostPath) run it as root (`--user 0`, `runAsUser: 0`).
#
# It uses nothing BuildKit-only (no `RUN --mount`), so the legacy builder builds it too:
# tests/image.rs does, with Debian's dockerd, on base and builder images made with debootstrap.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12

FROM ${BUILDER_IMAGE} AS builder
ARG CARGO_PROFILE_RELEASE_DEBUG=false
WORKDIR /src
# The dependencies first, in a layer that only Cargo.toml and Cargo.lock invalidate: a stub crate
# (the manifest names the benches, so they come too).
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin shoal \
    && rm -rf src
# Everything the binary is compiled from: the sources, the migrations `sqlx::migrate!` embeds
# and the console's built assets (console/dist, committed) that rust-embed embeds.
COPY src src
COPY migrations migrations
COPY console/dist console/dist
# touch: the copied files keep their older times, and cargo must see the stub replaced.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin shoal \
    && install -D -m 0755 target/release/shoal /out/usr/local/bin/shoal \
    && install -d /out/var/lib/shoal \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

FROM ${BASE_IMAGE}
COPY --from=builder /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/usr/local/bin/shoal /usr/local/bin/shoal
COPY --from=builder --chown=65532:65532 /out/var/lib/shoal /var/lib/shoal
# The default of every role's --data-dir (flags win); the manager's SQLite lives there too.
ENV SHOAL_DATA_DIR=/var/lib/shoal
WORKDIR /var/lib/shoal
USER 65532:65532
VOLUME ["/var/lib/shoal"]
# mirror, P2P, admin (node and seed); the manager's API.
EXPOSE 65001 65002 65003 8080
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["--help"]
