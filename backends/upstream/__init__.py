"""Upstream servers: the pooled client over replicas, transport errors, the status table,
Ollama (native API) and OpenAI-compatible relays."""
