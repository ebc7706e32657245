"""Hugging Face transformers in-process engine: settings (no torch import), loading, the
continuous-batching scheduler and its tensors, sampling, detokenizing."""
