"""Weight sources and download progress (backends/weight_sources.py, backends/hub_downloads.py):
parsing, what config load checks, the progress a download reports (log and /v1/models)."""

from __future__ import annotations

import logging

import pytest

from backends.hub_downloads import LoadProgress, _modelscope_callbacks, _reporting_tqdm
from backends.weight_sources import Source, SourceError, describe_missing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "modelscope:qwen/Qwen2.5-0.5B-Instruct-GGUF/q4.gguf",
            ("modelscope", "qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4.gguf"),
        ),
        (
            "modelscope:qwen/Qwen2.5-0.5B-Instruct",
            ("modelscope", "qwen/Qwen2.5-0.5B-Instruct", None),
        ),
        ("modelscope:org/repo/sub/dir/w.gguf", ("modelscope", "org/repo", "sub/dir/w.gguf")),
        ("hf:org/repo/w.gguf", ("hf", "org/repo", "w.gguf")),
        ("models/w.gguf", ("path", "models/w.gguf", None)),
    ],
)
def test_sources_parse(text, expected):
    source = Source.parse(text)
    assert (source.kind, source.location, source.file) == expected


@pytest.mark.parametrize("text", ["modelscope:", "modelscope:org", "modelscope:org//x"])
def test_a_malformed_modelscope_source_names_the_expected_form(text):
    with pytest.raises(SourceError, match=r"expected modelscope:<org>/<repo>\[/<file>\]"):
        Source.parse(text)


def test_hub_sources_are_not_checked_at_config_load():
    assert describe_missing("modelscope:org/repo/w.gguf") is None
    assert describe_missing("modelscope:org") is not None


def test_progress_logs_a_plain_line_each_tenth_without_a_terminal(caplog):
    progress = LoadProgress("m", "modelscope:org/repo/w.gguf", terminal=False)
    progress.expect(1000)
    with caplog.at_level(logging.INFO, logger="backends.hub_downloads"):
        for _ in range(20):
            progress.add(50)
    lines = [r.getMessage() for r in caplog.records]
    assert progress.bytes_done == 1000 and progress.bytes_total == 1000
    assert len(lines) == 10
    assert lines[0] == "model m: downloading modelscope:org/repo/w.gguf: 10% (0.0 of 0.0 MB)"
    assert lines[-1].startswith("model m: downloading modelscope:org/repo/w.gguf: 100%")


def test_progress_on_a_terminal_leaves_the_log_to_the_bar(caplog):
    progress = LoadProgress("m", "hf:org/repo", terminal=True)
    progress.expect(10)
    with caplog.at_level(logging.INFO, logger="backends.hub_downloads"):
        progress.add(10)
    assert caplog.records == [] and progress.bytes_done == 10


def test_modelscope_callbacks_count_every_file_into_the_progress():
    progress = LoadProgress("m", "modelscope:org/repo", terminal=False)
    callbacks = _modelscope_callbacks(progress)
    assert len(callbacks) == 1  # no terminal: no tqdm bar
    first, second = callbacks[0]("a.bin", 300), callbacks[0]("b.bin", 700)
    first.update(300)
    second.update(200)
    assert (progress.bytes_done, progress.bytes_total) == (500, 1000)


def test_the_hf_tqdm_counts_bytes_bars_only():
    progress = LoadProgress("m", "hf:org/repo", terminal=False)
    bar_class = _reporting_tqdm(progress)
    files = bar_class(total=3)  # huggingface_hub's "Fetching 3 files" bar
    files.update(1)
    data = bar_class(total=4096, unit="B", unit_scale=True)
    data.update(1024)
    data.close()
    files.close()
    assert (progress.bytes_done, progress.bytes_total) == (1024, 4096)


@pytest.mark.anyio
async def test_models_list_shows_the_download_while_a_model_loads(app_client):
    async with app_client() as (client, fakes):
        progress = LoadProgress("beta", "modelscope:org/repo/w.gguf", terminal=False)
        progress.expect(2000)
        progress.add(500)
        fakes["beta"].load_progress = progress  # type: ignore[attr-defined]
        cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    assert cards["beta"]["download"] == {
        "source": "modelscope:org/repo/w.gguf",
        "bytes_done": 500,
        "bytes_total": 2000,
    }
    assert cards["alpha"]["download"] is None
