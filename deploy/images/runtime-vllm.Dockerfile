# The vLLM inference runtime: vLLM's own image plus Kaiten's launcher, which turns the plan's flags
# and inference_config.yaml into `vllm serve`. GPU nodes only (compute capability 8.0+).
#   docker build -f deploy/images/runtime-vllm.Dockerfile -t kaiten/runtime-vllm .
FROM vllm/vllm-openai:v0.32.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /workspace
COPY pyproject.toml README.md ./
COPY presets ./presets
COPY shared ./shared
# vLLM already brings torch and transformers; the launcher needs only PyYAML and the catalog.
RUN pip install --no-cache-dir --no-deps . && pip install --no-cache-dir "pyyaml>=6.0,<7"
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "presets.inference.vllm_launcher"]
CMD ["--model", "/workspace/vllm/weights", "--kaito-adapters-dir", "/mnt/adapter"]
