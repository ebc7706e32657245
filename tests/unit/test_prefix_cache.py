"""``PrefixCache`` on its own: the longest match per adapter, never the last prompt token, the
token budget with least-recently-used eviction, and entries that another entry covers."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from backends.transformers.prefix_cache import PrefixCache, common_prefix

MIN = 4


def kv(tokens: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer keys and values whose every position holds its token id (so a slice shows
    which tokens it came from)."""
    column = torch.tensor(tokens, dtype=torch.float32).view(1, 1, -1, 1)
    return [(column.clone(), -column.clone()) for _ in range(layers)]


def cache(budget: int = 100) -> PrefixCache:
    return PrefixCache(budget, min_tokens=MIN)


def put(prefixes: PrefixCache, tokens: list[int], adapter: str = "base") -> None:
    prefixes.insert(adapter, tokens, kv(tokens))


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ([], [1, 2], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2, 3], [1, 9, 3], 1),
        (list(range(200)), list(range(200)), 200),
        (list(range(200)), [*range(130), -1, *range(131, 200)], 130),
        (list(range(64)), list(range(65)), 64),
    ],
)
def test_common_prefix(a, b, shared):
    assert common_prefix(a, b) == shared == common_prefix(b, a)


def test_lookup_takes_the_longest_match_and_its_kv():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5, 6])
    put(prefixes, [1, 2, 3, 4, 5, 6, 7, 8, 20])
    hit = prefixes.lookup("base", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert hit is not None and hit.tokens == 8
    keys, values = hit.layers[0]
    assert keys.flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert values.flatten().tolist() == [-1, -2, -3, -4, -5, -6, -7, -8]
    assert len(hit.layers) == 2


def test_the_last_prompt_token_is_always_read_again():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5, 6, 7])
    hit = prefixes.lookup("base", [1, 2, 3, 4, 5, 6])
    assert hit is not None and hit.tokens == 5


def test_short_matches_are_not_reused():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5, 6])
    assert prefixes.lookup("base", [1, 2, 3, 9, 9, 9]) is None
    assert prefixes.lookup("base", [1, 2, 3, 4]) is None  # 3 tokens without the last


def test_entries_are_kept_per_adapter():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5, 6], adapter="a")
    assert prefixes.lookup("b", [1, 2, 3, 4, 5, 6, 7]) is None
    assert prefixes.lookup("base", [1, 2, 3, 4, 5, 6, 7]) is None
    hit = prefixes.lookup("a", [1, 2, 3, 4, 5, 6, 7])
    assert hit is not None and hit.tokens == 6


def test_an_entry_covered_by_a_longer_one_is_dropped():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5])
    put(prefixes, [1, 2, 3, 4, 5, 6, 7])
    assert len(prefixes) == 1 and prefixes.tokens == 7
    put(prefixes, [1, 2, 3, 4, 5, 6])  # already held
    assert len(prefixes) == 1 and prefixes.tokens == 7
    put(prefixes, [1, 2, 3, 4, 5, 6], adapter="other")
    assert len(prefixes) == 2 and prefixes.tokens == 13


def test_the_least_recently_used_entries_go_first():
    prefixes = cache(budget=20)
    put(prefixes, [1] * 8)
    put(prefixes, [2] * 8)
    assert prefixes.lookup("base", [1] * 9) is not None  # 1s are now the most recent
    put(prefixes, [3] * 8)
    assert prefixes.tokens == 16 and len(prefixes) == 2
    assert prefixes.lookup("base", [2] * 9) is None
    assert prefixes.lookup("base", [1] * 9) is not None
    assert prefixes.lookup("base", [3] * 9) is not None


def test_an_entry_longer_than_the_budget_keeps_its_first_tokens():
    prefixes = cache(budget=10)
    put(prefixes, [7] * 5)
    put(prefixes, list(range(30)))
    assert prefixes.tokens == 10 and len(prefixes) == 1
    hit = prefixes.lookup("base", list(range(30)))
    assert hit is not None and hit.tokens == 10
    assert hit.layers[1][0].flatten().tolist() == list(range(10))


def test_a_zero_budget_keeps_nothing():
    prefixes = PrefixCache(0)
    assert not prefixes.enabled
    put(prefixes, list(range(50)))
    assert prefixes.tokens == 0 and prefixes.lookup("base", list(range(51))) is None


def test_kv_of_another_length_than_the_tokens_is_refused():
    prefixes = cache()
    with pytest.raises(ValueError, match="KV of 5 positions for 6 tokens"):
        prefixes.insert("base", [1, 2, 3, 4, 5, 6], kv([1, 2, 3, 4, 5]))


def test_stored_kv_is_never_changed_by_a_hit():
    prefixes = cache()
    put(prefixes, [1, 2, 3, 4, 5, 6, 7, 8])
    hit = prefixes.lookup("base", [1, 2, 3, 4, 5, 6, 9])
    assert hit is not None
    grown = DynamicCache(ddp_cache_data=hit.layers)
    grown.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 0)
    again = prefixes.lookup("base", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert again is not None
    assert again.layers[0][0].flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
