# The worker image (also runs the other `lifecycle` commands). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from, so unrelated edits do not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY processors ./processors
COPY schemas ./schemas
RUN pip install .

# An unprivileged user owning the state directory (the worker's RocksDB tables).
RUN useradd --create-home --uid 10001 lifecycle && mkdir /data && chown lifecycle /data
USER lifecycle
WORKDIR /data
ENV LIFECYCLE_HOME=/data
VOLUME ["/data"]

CMD ["lifecycle", "worker"]
