"""An upstream's answer as the relay reads it: lines as SSE ends them (CRLF, LF, CR, however
the reads split them; never at U+2028, which JSON may hold raw), and aiohttp's failures as the
httpx errors the error tree classifies."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import httpx
import pytest

from backends.upstream.response import UpstreamResponse, httpx_error

pytestmark = pytest.mark.anyio


class FakeContent:
    """aiohttp's ``StreamReader`` as ``lines`` reads it: ``readany`` gives each read, then
    b"" (or raises ``fail`` after the reads)."""

    def __init__(self, reads: list[bytes], fail: Exception | None = None) -> None:
        self._reads = list(reads)
        self._fail = fail

    async def readany(self) -> bytes:
        if self._reads:
            return self._reads.pop(0)
        if self._fail is not None:
            raise self._fail
        return b""


class FakeAiohttpResponse:
    def __init__(self, reads: list[bytes], fail: Exception | None = None) -> None:
        self.status = 200
        self.content = FakeContent(reads, fail)


def answer(reads: list[bytes], fail: Exception | None = None) -> UpstreamResponse:
    return UpstreamResponse(cast(Any, FakeAiohttpResponse(reads, fail)))


async def lines_of(reads: list[bytes]) -> list[bytes]:
    return [line async for line in answer(reads).lines()]


@pytest.mark.parametrize(
    "reads",
    [
        [b"data: a\n\ndata: b\n\n"],
        [b"data: a\r\n\r\ndata: b\r\n\r\n"],
        [b"data: a\r\rdata: b\r\r"],
        [b"da", b"ta: a\n", b"\nd", b"ata: b\n\n"],
        [b"data: a\r", b"\n\r", b"\ndata: b\r\n", b"\r\n"],  # CRLF split between reads
    ],
)
async def test_lines_end_at_crlf_lf_or_cr_however_the_reads_split_them(reads):
    assert await lines_of(reads) == [b"data: a", b"", b"data: b", b""]


async def test_a_last_line_without_an_end_is_given():
    assert await lines_of([b"data: a\n", b"data: b"]) == [b"data: a", b"data: b"]


async def test_unicode_line_separators_inside_json_do_not_end_a_line():
    payload = '{"content":"one\u2028two\u2029three\x85"}'.encode()
    assert await lines_of([b"data: " + payload + b"\n\n"]) == [b"data: " + payload, b""]


async def test_a_broken_body_raises_the_httpx_error_httpx_aiohttp_would():
    broken = answer([b"data: a\n"], fail=aiohttp.ClientPayloadError("cut"))
    lines = broken.lines()
    assert await anext(lines) == b"data: a"
    with pytest.raises(httpx.ReadError) as raised:
        await anext(lines)
    assert isinstance(raised.value.__cause__, aiohttp.ClientPayloadError)


def test_aiohttp_errors_map_as_httpx_aiohttp_maps_them():
    refused = aiohttp.ServerDisconnectedError()
    assert isinstance(httpx_error(refused), httpx.ConnectTimeout)
    assert isinstance(httpx_error(aiohttp.SocketTimeoutError()), httpx.ReadTimeout)
    other = ValueError("not aiohttp's")
    assert httpx_error(other) is other
