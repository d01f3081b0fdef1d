"""attestation._memo: memoisation by identity for what one parsed object determines."""

from __future__ import annotations

import pytest

from attestation._memo import IdentityMemo, identity_memo


class _Thing:
    """Equal to every other _Thing, like two parses of the same certificate."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Thing)

    def __hash__(self) -> int:
        return 0


def test_value_is_computed_once_per_object_and_never_shared_by_equality() -> None:
    calls: list[int] = []

    @identity_memo(maxsize=8)
    def double(thing: _Thing) -> int:
        calls.append(thing.value)
        return thing.value * 2

    a, b = _Thing(1), _Thing(2)
    assert (double(a), double(a), double(b), double(b)) == (2, 2, 4, 4)
    assert calls == [1, 2]  # equal objects are not one key: each object computes its own


def test_errors_are_not_remembered() -> None:
    attempts: list[None] = []

    def flaky(_: _Thing) -> int:
        attempts.append(None)
        if len(attempts) == 1:
            raise ValueError("first")
        return 5

    memo = IdentityMemo(flaky, maxsize=4)
    thing = _Thing(0)
    with pytest.raises(ValueError, match="first"):
        memo(thing)
    assert memo(thing) == 5


def test_size_is_bounded_oldest_first_and_clear_forgets() -> None:
    calls: list[int] = []

    def ident(thing: _Thing) -> int:
        calls.append(thing.value)
        return thing.value

    memo = IdentityMemo(ident, maxsize=2)
    things = [_Thing(i) for i in range(3)]
    for thing in things:
        memo(thing)
    memo(things[2])
    memo(things[1])
    assert calls == [0, 1, 2]
    memo(things[0])  # evicted by the third
    assert calls == [0, 1, 2, 0]
    memo.cache_clear()
    memo(things[0])
    assert calls == [0, 1, 2, 0, 0]


def test_remembered_value_is_returned_without_computing() -> None:
    memo: IdentityMemo[_Thing, int] = IdentityMemo(lambda thing: thing.value, maxsize=4)
    thing = _Thing(3)
    memo.remember(thing, 30)
    assert memo(thing) == 30
    assert memo(_Thing(3)) == 3
