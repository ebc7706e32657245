"""LangChain ChatOpenAI, unchanged, against the real server."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

pytestmark = pytest.mark.integration

QUESTION = "Name the capital city of France in one word."


@pytest.fixture
def llm(server):
    return ChatOpenAI(
        base_url=server.v1, api_key="unused", model="smollm2", temperature=0, max_retries=0
    )


def test_invoke(llm):
    reply = llm.invoke([SystemMessage("Answer briefly."), HumanMessage(QUESTION)])
    assert isinstance(reply, AIMessage)
    assert "Paris" in reply.content
    assert reply.usage_metadata["total_tokens"] > 0


def test_stream_with_usage(server):
    llm = ChatOpenAI(
        base_url=server.v1,
        api_key="x",
        model="smollm2",
        temperature=0,
        stream_usage=True,
        max_retries=0,
    )
    chunks = list(llm.stream(QUESTION))
    text = "".join(c.content for c in chunks)
    assert "Paris" in text
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1
    assert usage[0]["total_tokens"] == usage[0]["input_tokens"] + usage[0]["output_tokens"]


def test_batch(llm):
    replies = llm.batch([QUESTION, "Say hello."])
    assert len(replies) == 2
    assert "Paris" in replies[0].content
    assert replies[1].content.strip()


def test_astream(llm):
    async def run() -> str:
        return "".join([c.content async for c in llm.astream(QUESTION)])

    assert "Paris" in asyncio.run(run())
