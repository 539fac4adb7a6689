"""Folder state: compact UID range sets and per-flag bookkeeping, checked against plain sets."""

from __future__ import annotations

import itertools
import random

import pytest

from relay.sources.imap.listener import Backoff
from relay.sources.imap.state import FolderState, RangeSet


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([], ""),
        ([1], "1"),
        ([1, 2, 3, 7], "1:3,7"),
        ([5, 3, 4, 10, 9], "3:5,9:10"),
        ([4294967295], "4294967295"),
    ],
)
def test_rangeset_text_round_trip(values: list[int], text: str) -> None:
    """Sets print as IMAP sequence sets and parse back to the same set."""
    ranges = RangeSet(values)
    assert ranges.to_text() == text
    assert RangeSet.from_text(text) == ranges
    assert list(ranges) == sorted(set(values))
    assert len(ranges) == len(set(values))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3:1", [1, 2, 3]), ("1:2,2:4", [1, 2, 3, 4]), ("7,1", [1, 7]), (",,", [])],
)
def test_rangeset_parses_unordered_and_overlapping(text: str, expected: list[int]) -> None:
    """Reversed, overlapping and out-of-order ranges normalise."""
    assert list(RangeSet.from_text(text)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_rangeset_behaves_like_a_set(seed: int) -> None:
    """Random adds and discards keep the ranges equal to a plain set, and minimal."""
    rng = random.Random(seed)
    ranges = RangeSet()
    model: set[int] = set()
    for _ in range(2000):
        value = rng.randint(1, 60)
        if rng.random() < 0.6:
            ranges.add(value)
            model.add(value)
        else:
            ranges.discard(value)
            model.discard(value)
        if rng.random() < 0.05:
            low = rng.randint(1, 60)
            high = low + rng.randint(0, 8)
            ranges.add_range(low, high)
            model.update(range(low, high + 1))
    assert list(ranges) == sorted(model)
    assert all(v in ranges for v in model)
    assert 0 not in ranges
    pairs = ranges.ranges()
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(pairs))
    assert ranges.max() == (max(model) if model else None)


def test_folder_state_flags_and_row_round_trip() -> None:
    """Flags per UID are stored as one range set per flag and survive a row round trip."""
    state = FolderState(folder_no=2, version=0, uidvalidity=7, uidnext=5, highestmodseq=9)
    state.set_flags(1, ["\\Seen"])
    state.set_flags(2, ["\\Seen", "\\Flagged"])
    state.set_flags(3, [])
    state.set_flags(4, ["\\Seen"])
    state.set_flags(2, ["\\Flagged"])
    assert state.flags_of(2) == ["\\Flagged"]
    state.forget(1)
    columns = state.columns()
    assert columns["uids"] == "2:4"
    assert columns["flags"] == {"\\Flagged": "2", "\\Seen": "4"}
    row = {"folder_no": 2, "version": 3, **columns}
    again = FolderState.from_row(row)
    assert again.uids == state.uids
    assert again.flags_of(4) == ["\\Seen"]
    assert again.version == 3
    again.reset(8, 1, None)
    assert not again.uids
    assert again.flags == {}
    assert again.initialized


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    """Delays start near the minimum, double, stop at the maximum, and reset."""
    backoff = Backoff(1.0, 300.0)
    delays = [backoff.next() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        base = min(300.0, 2.0**attempt)
        assert base / 2 <= delay <= base
    backoff.reset()
    assert backoff.next() <= 1.0
