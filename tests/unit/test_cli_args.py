"""The command line refuses out-of-range numbers at once (exit 2, the argument named)."""

from __future__ import annotations

import pytest

from gateway.cli import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--port", "99999"], "--port"),  # would bind 99999 mod 65536
        (["serve", "--port", "-1"], "--port"),
        (["serve", "--port", "x"], "--port"),
        (["chat", "--max-tokens", "-5"], "--max-tokens"),
    ],
)
def test_bad_numbers_are_refused_naming_the_argument(argv, named, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"argument {named}:" in capsys.readouterr().err


def test_version_is_the_installed_package_version(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"llmgate {importlib.metadata.version('llmgate')}\n"
