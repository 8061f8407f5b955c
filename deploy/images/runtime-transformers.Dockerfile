# The transformers inference runtime (CPU or GPU with the matching torch build), from the project's
# own files. Build from the repository root:
#   docker build -f deploy/images/runtime-transformers.Dockerfile -t kaiten/runtime-transformers .
# TORCH_INDEX picks the torch build: the CPU one by default, a CUDA one for GPU nodes.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /workspace
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY presets ./presets
COPY services ./services
COPY kaiten ./kaiten
COPY localdev ./localdev
RUN pip install --no-cache-dir ".[runtime]"
# Kaito's layout: weights baked or mounted at /workspace/tfs/weights, adapters in /mnt/adapter.
EXPOSE 5000
USER 1000
ENTRYPOINT ["python", "-m", "presets.inference.server"]
CMD ["--model", "/workspace/tfs/weights", "--adapters-dir", "/mnt/adapter"]
