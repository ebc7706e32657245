# llmgate with the embedded SmolLM2 model, CPU llama.cpp.
# GPU hosts: build llama-cpp-python with CUDA instead, e.g.
#   docker build --build-arg CMAKE_ARGS="-DGGML_CUDA=on" ... (on a CUDA base image)
FROM python:3.11-slim
ARG CMAKE_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS} PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY backends ./backends
RUN pip install '.[llama-cpp,default-model]'
COPY config.yaml ./config.yaml
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["llmgate", "serve", "--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "8000"]
