# llmgate with the embedded SmolLM2 model: CPU llama.cpp and CPU torch (transformers engine).
# GPU hosts: build llama-cpp-python with CUDA and take torch's CUDA wheels instead, e.g.
#   docker build --build-arg CMAKE_ARGS="-DGGML_CUDA=on" \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 ... (on a CUDA base image)
FROM python:3.11-slim
ARG CMAKE_ARGS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV CMAKE_ARGS=${CMAKE_ARGS} PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PIP_EXTRA_INDEX_URL=${TORCH_INDEX} LLMGATE_CACHE_DIR=/root/.cache/llmgate
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY gateway ./gateway
COPY backends ./backends
RUN pip install -c requirements.lock '.[all]'
COPY config.yaml ./config.yaml
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["llmgate", "serve", "--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "8000"]
