"""llama.cpp in-process engine: settings (no engine import), the backend, the decode loop."""
