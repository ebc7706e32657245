"""The in-process engine layer shared by llama.cpp and transformers (docs/architecture.md,
"The engine seam")."""
