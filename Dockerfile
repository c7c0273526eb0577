# SimBridge relay: one process, SQLite on the /data volume, migrations applied at start.
# Any base with python3 (3.11 or later) and its venv module will do; the tests build on a Debian
# base made with debootstrap (docs/deployment.md).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
COPY pyproject.toml README.md /src/
COPY simbridge /src/simbridge
COPY blueprints /src/blueprints
COPY migrations /src/migrations
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "/src[postgres]"

FROM ${BASE_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8100 \
    DB_PATH=/data/simbridge.db \
    SIMBRIDGE_SECRET_FILE=/data/simbridge.jwt-secret
COPY --from=build /venv /venv
RUN groupadd --system --gid 10001 simbridge \
    && useradd --system --uid 10001 --gid simbridge --home-dir /data --no-create-home simbridge \
    && mkdir -p /data && chown simbridge:simbridge /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8100
# Sanic's graceful shutdown (SIMBRIDGE_GRACEFUL_SHUTDOWN_SECONDS, 8 s) fits in docker stop's 10 s.
STOPSIGNAL SIGTERM
CMD ["simbridge", "serve"]
