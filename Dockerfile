# syntax=docker/dockerfile:1
#
# Stageworks: the whole platform as one container.
#
#   docker build -t stageworks .
#   docker run -p 8080:8080 -v stageworks-data:/data stageworks
#
# Configuration is /etc/stageworks/config.toml (the repository's config.toml),
# overridden by STAGEWORKS__SECTION__KEY environment variables, e.g.
#   -e STAGEWORKS__SERVICES__ORDERS__WORKERS=4
#
# The admin listener (/metrics, /admin/actors) stays on 127.0.0.1:9090 inside
# the container by default. To reach it from outside (e.g. for Prometheus),
# set BOTH of these; Stageworks refuses to start with a non-loopback admin
# address and no token:
#   -e STAGEWORKS__ADMIN__LISTEN=0.0.0.0:9090
#   -e STAGEWORKS__ADMIN__TOKEN=<a long random secret>
#   -p 9090:9090

############################ build ############################
FROM rust:1.95-slim-bookworm AS builder

WORKDIR /src

# The whole workspace (see .dockerignore): root package, supervision/,
# actors/ (with their migrations) and bench/hello, bench/pipeline and
# bench/overload, which are workspace members and must be present for cargo
# to load the workspace.
COPY . .

# target/ is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin stageworks \
    && install -D -m 0755 target/release/stageworks /out/stageworks

############################ runtime ############################
FROM debian:bookworm-slim AS runtime

# Versions are not pinned on purpose: Debian stable replaces a package's
# version on every point/security release and drops the old one, so an exact
# pin breaks the build; the base image tag is what fixes the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid so volumes can be prepared on the host.
RUN groupadd --system --gid 10001 stageworks \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin stageworks \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data

COPY --from=builder /out/stageworks /usr/local/bin/stageworks
COPY config.toml /etc/stageworks/config.toml

ENV STAGEWORKS_CONFIG=/etc/stageworks/config.toml \
    STAGEWORKS__DATA_DIR=/data \
    STAGEWORKS__SERVER__LISTEN=0.0.0.0:8080 \
    STAGEWORKS__LOG__FORMAT=json

# SQLite databases (one per service) live here; 0700, as production
# refuses a data dir other users can open (a new named volume takes it).
VOLUME ["/data"]
WORKDIR /data

USER 10001:10001

# 8080: public API. 9090: admin (loopback-only unless configured, see top).
EXPOSE 8080 9090

HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["stageworks", "healthcheck"]

ENTRYPOINT ["stageworks"]
CMD ["serve"]
