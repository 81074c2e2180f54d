# pbx-bridge container image.
#   docker build -t pbx-bridge .
#   docker run --rm -e PBX_BRIDGE_AMI_SECRET=... -v "$PWD/config:/etc/pbx-bridge:ro" -p 8080:8080 pbx-bridge
# docker-compose.yml builds and runs it with the rest of the stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Service hours are local time: zoneinfo needs the time zone database (set TZ).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

# Only what the package build needs, so the build context's .venv, .git and
# tests never reach the image. README* may be absent: a wildcard that matches
# nothing is allowed when another source is present.
WORKDIR /src
COPY pyproject.toml README* ./
COPY pbx_bridge ./pbx_bridge
RUN pip install . \
    && rm -rf /src

RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/pbx-bridge --create-home pbx-bridge
USER pbx-bridge
WORKDIR /var/lib/pbx-bridge

# Wallboard, REST and /metrics (configure the web listener on 0.0.0.0:8080).
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/metrics', timeout=4)"]

# SIGTERM drains the engine and exits cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pbx-bridge"]
CMD ["run", "--config", "/etc/pbx-bridge/pbx-bridge.toml"]
