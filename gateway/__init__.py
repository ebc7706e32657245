"""llmgate's HTTP server: OpenAI-compatible routes over the engines in ``backends``."""
