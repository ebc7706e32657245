"""Fetching weights from a model hub — the Hugging Face Hub (``hf:``) or ModelScope
(``modelscope:``) — into the hub's own local cache, and reporting the download's progress.

Each hub is asked for its cache first, with no network at all (a pre-filled cache works
offline); only then does it download. A failure is a ``BackendUnavailableError`` (503) naming
the model, the source and how to provide the weights locally, never a hang on a dead network.

``LoadProgress`` counts the bytes of a download as they arrive (from the hub's download
threads). The log shows them as the hub's own progress bar on a terminal, and as a plain line
every 10% otherwise; ``/v1/models`` shows them while the model loads.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.errors import BackendUnavailableError

log = logging.getLogger(__name__)


class LoadProgress:
    """Bytes of a model's weights downloaded so far (``bytes_total``: None until known).
    Written by download threads, read by the event loop; ``add``/``expect`` are thread-safe."""

    def __init__(self, model: str, source: str, *, terminal: bool | None = None) -> None:
        self.model = model
        self.source = source
        self.bytes_done = 0
        self.bytes_total: int | None = None
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._lock = threading.Lock()
        self._logged_tenths = 0

    def expect(self, size: int) -> None:
        """One more file of ``size`` bytes is coming."""
        if size > 0:
            with self._lock:
                self.bytes_total = (self.bytes_total or 0) + size

    def add(self, size: int) -> None:
        with self._lock:
            self.bytes_done += size
            line = self._line_due()
        if line is not None:
            log.info("%s", line)

    def _line_due(self) -> str | None:
        """A plain progress line each time another tenth is done (no terminal: no bar)."""
        if self.terminal or not self.bytes_total:
            return None
        tenths = min(10, self.bytes_done * 10 // self.bytes_total)
        if tenths <= self._logged_tenths:
            return None
        self._logged_tenths = tenths
        return (
            f"model {self.model}: downloading {self.source}: {tenths * 10}% "
            f"({self.bytes_done / 1e6:.1f} of {self.bytes_total / 1e6:.1f} MB)"
        )


def download_from_hf(
    model: str, repo: str, file: str | None, progress: LoadProgress | None = None
) -> Path:
    """``file`` of Hugging Face repo ``repo`` (None: the whole repo) in the HF cache."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model '{model}': source hf:{repo} needs huggingface_hub "
            "(pip install huggingface_hub), or point source at a local file"
        ) from exc

    def fetch(local_only: bool) -> Path:
        options: dict[str, Any] = {"local_files_only": local_only}
        if not local_only and progress is not None:
            options["tqdm_class"] = _reporting_tqdm(progress)
        if file is not None:
            return Path(huggingface_hub.hf_hub_download(repo, file, **options))
        return Path(huggingface_hub.snapshot_download(repo, **options))

    return _cache_then_network(
        fetch,
        lambda exc: BackendUnavailableError(
            f"model '{model}': could not fetch hf:{_target(repo, file)} from the Hugging Face "
            f"Hub ({type(exc).__name__}). Offline? Download it on a connected machine and set "
            "this model's `source:` to the local path, or pre-fill the HF cache (HF_HOME)."
        ),
    )


def download_from_modelscope(
    model: str, repo: str, file: str | None, progress: LoadProgress | None = None
) -> Path:
    """``file`` of ModelScope repo ``repo`` (None: the whole repo) in ModelScope's cache
    (``MODELSCOPE_CACHE``, default ``~/.cache/modelscope``: ``models/<org>--<repo>/snapshots/
    <revision>/``). A single file is fetched as a snapshot limited to it: the one call that
    reports progress and never asks the network for a revision when the cache has it."""
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model '{model}': source modelscope:{repo} needs modelscope "
            "(pip install modelscope), or point source at a local file"
        ) from exc

    def fetch(local_only: bool) -> Path:
        options: dict[str, Any] = {"local_files_only": local_only}
        if file is not None:
            options["allow_patterns"] = [file]
        if not local_only and progress is not None:
            options["progress_callbacks"] = _modelscope_callbacks(progress)
        folder = Path(snapshot_download(repo, **options))
        if file is None:
            return folder
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"{file} is not in {folder}")
        return path

    return _cache_then_network(
        fetch,
        lambda exc: BackendUnavailableError(
            f"model '{model}': could not fetch modelscope:{_target(repo, file)} from ModelScope "
            f"({type(exc).__name__}: {exc}). Offline? Download it on a connected machine "
            "(modelscope download --model ...) and set this model's `source:` to the local "
            "path, or pre-fill ModelScope's cache (MODELSCOPE_CACHE)."
        ),
    )


def _cache_then_network(
    fetch: Callable[[bool], Path], failure: Callable[[Exception], BackendUnavailableError]
) -> Path:
    try:
        return fetch(True)  # already in the cache: no network round trip
    except Exception:
        pass
    try:
        return fetch(False)
    except Exception as exc:  # network, auth, missing repo: all mean "not available here"
        raise failure(exc) from exc


def _target(repo: str, file: str | None) -> str:
    return f"{repo}/{file}" if file else repo


def _reporting_tqdm(progress: LoadProgress) -> type:
    """A tqdm class for huggingface_hub that also counts bytes into ``progress`` (its bar is
    drawn on a terminal only)."""
    from tqdm.auto import tqdm

    class ReportingTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._bytes = kwargs.get("unit") == "B"  # not the "files fetched" bar
            if self._bytes and kwargs.get("total"):
                progress.expect(int(kwargs["total"]) - int(kwargs.get("initial") or 0))
            kwargs["disable"] = kwargs.get("disable") or not progress.terminal
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self._bytes and n:
                progress.add(int(n))
            return super().update(n)

    return ReportingTqdm


def _modelscope_callbacks(progress: LoadProgress) -> list[type]:
    """ModelScope progress callbacks (classes it instantiates per file): one counting into
    ``progress``, and ModelScope's own tqdm bar on a terminal."""
    from modelscope.hub.callback import ProgressCallback, TqdmCallback

    class Reporting(ProgressCallback):
        def __init__(self, filename: str, file_size: int) -> None:
            super().__init__(filename, file_size)
            progress.expect(file_size)

        def update(self, size: int) -> None:
            progress.add(size)

    return [Reporting, TqdmCallback] if progress.terminal else [Reporting]
