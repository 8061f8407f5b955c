# The five services and the `kaiten` command, one image: the base install of pyproject.toml, without
# the `runtime` extras (torch, transformers: those run in workload pods, from runtime-*.Dockerfile).
# Build from the repository root (docker-compose.yml does the same, as kaiten:dev):
#   docker build -f deploy/images/kaiten.Dockerfile -t kaiten:dev .
#   docker run --rm kaiten:dev run planner     # or: migrate, validate FILE, plan FILE, ...
# Configured by the environment only (NATS_URL, DATABASE_URL, KUBECONFIG, KAITEN_*; see the
# README). Each service serves /healthz, /readyz and /metrics on KAITEN_HEALTH_PORT (default
# 8471-8475, one per service) on every interface: a health check calls
#   python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8472/readyz')"
# (no curl in a slim image). The watcher's admission webhook listens on 9443.

# Build stage: the project and its dependencies in a virtual environment, copied whole below.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/kaiten
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY presets ./presets
COPY services ./services
COPY kaiten ./kaiten
COPY localdev ./localdev
RUN /opt/kaiten/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/kaiten/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/kaiten \
    KAITEN_HEALTH_HOST=0.0.0.0
# 65532: the conventional non-root uid of distroless images. Its home is the working directory,
# where the watcher keeps the webhook certificate it generates (.kaiten/webhook).
RUN useradd --uid 65532 --user-group --create-home --home-dir /home/kaiten \
        --shell /usr/sbin/nologin kaiten
COPY --from=build /opt/kaiten /opt/kaiten
WORKDIR /home/kaiten
USER 65532:65532
EXPOSE 8471 8472 8473 8474 8475 9443
ENTRYPOINT ["kaiten"]
CMD ["--help"]
