# shoal's container image: the one `shoal` binary, for every role (node, seed, manager, CLI).
#
#   docker build -t shoal .
#   docker run -d --network host -v shoal-data:/var/lib/shoal shoal node --upstream …
#   docker run -d -p 8080:8080 -v shoal-manager:/var/lib/shoal shoal manager --listen 0.0.0.0:8080
#
# The manager listens on 127.0.0.1:8080 unless told otherwise, which in a container is
# unreachable from outside it: give it `--listen 0.0.0.0:8080` (or `-e
# SHOAL_MANAGER_LISTEN=0.0.0.0:8080`). The image does not set it, so every role keeps the
# defaults its --help shows; a node's mirror and admin ports likewise stay on 127.0.0.1 unless
# its flags (--listen, --admin-listen) say otherwise.
#
# Build arguments:
#   BUILDER_IMAGE  the stage that compiles shoal: a Rust toolchain (edition 2024, so Rust 1.85
#                  or newer) with a C compiler: ring, the bundled SQLite (libsqlite3-sys) and psm
#                  build C code. (aws-lc-sys is in Cargo.lock, as an optional dependency of
#                  rustls and quinn, but no enabled feature compiles it, so no cmake is needed.)
#                  rust:1-bookworm.
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
# The dependencies first, in a layer that only Cargo.toml and Cargo.lock invalidate: a stub crate.
# The manifest names the benches, and cargo wants their files to exist, so they are stubs too
# (one per `[[bench]]` name); `--bin shoal` never compiles them, so the real ones are not needed.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name *= *"\(.*\)"/\1/p' Cargo.toml); do \
           echo 'fn main() {}' > "benches/$bench.rs"; \
       done \
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
# mirror, P2P, admin (node and seed); the manager's API (with `--listen 0.0.0.0:8080`, above).
EXPOSE 65001 65002 65003 8080
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["--help"]
