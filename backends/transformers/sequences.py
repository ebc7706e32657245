"""What the transformers engine's scheduler tracks: per request, the request, its prompt being
prefilled into its own KV cache, and its choices as rows of the batch; and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from backends.events import Event
from backends.local.bridge import ThreadBridge
from backends.local.engine import EngineStats
from backends.local.output import ChoiceOutput
from backends.local.plan import GenerationPlan
from backends.transformers.detokenizer import IncrementalDetokenizer
from backends.transformers.sampling import RowSampler


@dataclass
class Request:
    """A request in the engine: its plan, where its events go, its choices' tally."""

    job: GenerationPlan
    bridge: ThreadBridge[Event]
    remaining: int = 0  # choices still generating
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens copied from the prefix cache


@dataclass
class Prefill:
    """A request whose prompt is being read, slice by slice, into its own KV cache."""

    request: Request
    adapter: str
    cache: Any = None
    done: int = 0  # prompt tokens in the cache
    reused: int = 0  # of which copied from the prefix cache
    logits: torch.Tensor | None = None  # the last prompt position's, once done


@dataclass
class BatchRow:
    """One choice of one request: a row of the batch."""

    request: Request
    sampler: RowSampler
    detokenizer: IncrementalDetokenizer
    output: ChoiceOutput
    adapter: str
    done: bool = False
    drawn: list[int] = field(default_factory=list)  # its tokens so far (all but the last fed)


@dataclass
class BatchStats(EngineStats):
    """``EngineStats`` plus the batch's own counters."""

    forward_passes: int = 0
    decode_steps: int = 0
    rows: int = 0  # sequences in the batch now
    peak_rows: int = 0
    prefix_hits: int = 0  # requests that started from a cached prefix
    prefix_cached_tokens: int = 0  # tokens the prefix cache holds now

    @property
    def batch_size(self) -> int:
        return self.rows
