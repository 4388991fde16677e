# syntax=docker/dockerfile:1
#
# One image for every Sheaf process; the command picks the role:
#   docker run IMAGE                # `sheaf api` (the default command)
#   docker run IMAGE worker         # `sheaf worker`
#   docker run IMAGE db upgrade     # migrations (the Kubernetes migration Job)
#   docker run -p 8000:8000 IMAGE up   # everything in one container (SQLite, local blobs)
#
# Stages: `builder` turns the checkout into a wheel and installs it with its dependencies
# into a virtual environment; `odbc-repo` fetches Microsoft's apt signing key (curl and
# gnupg stay there); `runtime` is the slim base plus Microsoft ODBC Driver 18 (the only
# driver with Entra ID token sign-in), tini and the virtual environment. No compiler, no
# pip cache and no package lists reach the runtime stage.
#
# This project's CI has no Docker engine: it lints this file (hadolint, checkov) and builds
# the same wheel the builder stage builds (deploy/check.sh); docs/deploy.md builds the image
# in Azure with `az acr build`. The base image tag is written out in each stage (not an ARG)
# so linters can check it: change all three together.

# -- builder: wheel + virtual environment ------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A compiler and the unixODBC headers only for a dependency that ships no wheel for this
# platform (pyodbc on a new architecture); they never leave this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential unixodbc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sheaf ./sheaf
COPY api ./api
COPY worker ./worker
COPY sql ./sql
# The wheel carries sql/ as sheaf/_sql (pyproject force-include): migrations and the
# stored procedures travel with the code. Dependencies resolve within pyproject's ranges.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/sheaf \
    && /opt/sheaf/bin/python -m pip install /wheels/sheaf-*.whl \
    && /opt/sheaf/bin/python -c "from sheaf.adapters.sql.migrate import sql_dir; print(sql_dir())"

# -- odbc-repo: Microsoft's package signing key and source list ---------------------------------
FROM python:3.11-slim-bookworm AS odbc-repo
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
    && rm -rf /var/lib/apt/lists/* \
    && curl -fsSL https://packages.microsoft.com/keys/microsoft.asc \
       | gpg --dearmor -o /microsoft-prod.gpg \
    && echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/microsoft-prod.gpg] https://packages.microsoft.com/debian/12/prod bookworm main" \
       > /mssql-release.list

# -- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="sheaf" \
      org.opencontainers.image.description="Document ingestion for Azure: API and worker in one image" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"

COPY --from=odbc-repo /microsoft-prod.gpg /usr/share/keyrings/microsoft-prod.gpg
COPY --from=odbc-repo /mssql-release.list /etc/apt/sources.list.d/mssql-release.list
# msodbcsql18 pulls unixodbc (pyodbc's libodbc.so.2); tini reaps orphaned extraction
# children and forwards SIGTERM; tesseract-ocr (English data included) reads scans and
# images (SHEAF_OCR_*). Versions follow the base image's Debian release, so
# security updates arrive with each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && ACCEPT_EULA=Y apt-get install -y --no-install-recommends msodbcsql18 tini tesseract-ocr \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sheaf \
    && useradd --system --uid 10001 --gid sheaf --home-dir /var/lib/sheaf --create-home \
       --shell /usr/sbin/nologin sheaf

COPY --from=builder /opt/sheaf /opt/sheaf

# Containers listen on every interface, so the API demands API keys (Sheaf refuses to
# listen beyond loopback without authentication; docs/security.md); JSON log lines; the
# worker's health and metrics port is fixed so probes and the PodMonitor can name it.
# Kubernetes sets the rest (deploy/k8s/base/sheaf.env). `docker run` without other settings
# gets the embedded backends (SQLite and local blobs under /var/lib/sheaf/.sheaf): create a
# key first: `docker run -v DATA:/var/lib/sheaf IMAGE keys create --name me --scope admin
# --collection '*'`.
ENV PATH=/opt/sheaf/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHEAF_AUTH_MODE=keys \
    SHEAF_HOST=0.0.0.0 \
    SHEAF_PORT=8000 \
    SHEAF_WORKER_METRICS_PORT=9100 \
    SHEAF_LOG_FORMAT=json

WORKDIR /var/lib/sheaf
USER 10001:10001
EXPOSE 8000 9100

# curl is not in the image: Python asks /healthz of whichever of the API port and the
# worker port answers (an API container serves the first, a worker the second).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r\ndef ok(port):\n    try:\n        return r.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3).status == 200\n    except OSError:\n        return False\nports = [os.environ.get(k, '0') for k in ('SHEAF_PORT', 'SHEAF_WORKER_METRICS_PORT')]\nsys.exit(0 if any(ok(p) for p in ports if p != '0') else 1)"]

ENTRYPOINT ["tini", "--", "sheaf"]
CMD ["api"]
