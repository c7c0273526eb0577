# SimBridge relay: one process, SQLite on the /data volume, migrations applied at start.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8100 \
    DB_PATH=/data/simbridge.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY simbridge ./simbridge
COPY blueprints ./blueprints
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[postgres]" \
    && useradd --system --uid 10001 --home-dir /app simbridge \
    && mkdir -p /data && chown simbridge /data

USER simbridge
VOLUME ["/data"]
EXPOSE 8100
# Sanic's graceful shutdown (SIMBRIDGE_GRACEFUL_SHUTDOWN_SECONDS, 8 s) fits in docker stop's 10 s.
STOPSIGNAL SIGTERM
CMD ["simbridge", "serve"]
