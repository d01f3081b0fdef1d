"""The buffered-request-bytes budget: per session, per source, global; all or nothing."""

from __future__ import annotations

import pytest

from bridge.buffer_budget import BufferBudget
from shroud_sdk.refusals import OverloadLimit


def test_a_session_is_refused_past_its_share_without_being_charged() -> None:
    budget = BufferBudget(100, source_share=50)
    session = budget.session(30, "a")
    assert session.charge(30) is None
    assert session.charge(1) is OverloadLimit.SESSION_BUFFERED_BYTES
    assert (session.used, budget.used) == (30, 30)


def test_a_source_is_refused_past_its_share_across_sessions() -> None:
    budget = BufferBudget(100, source_share=50)
    first, second = budget.session(30, "a"), budget.session(30, "a")
    assert first.charge(30) is None
    assert second.charge(21) is OverloadLimit.SOURCE_BUFFERED_BYTES
    assert second.charge(20) is None
    other = budget.session(30, "b")
    assert other.charge(30) is None  # another source has its own share
    assert budget.used_by("a") == 50


def test_the_global_budget_refuses_everyone_once_full() -> None:
    budget = BufferBudget(60, source_share=40)
    assert budget.session(40, "a").charge(40) is None
    late = budget.session(40, "b")
    assert late.charge(21) is OverloadLimit.BUFFERED_BYTES
    assert late.charge(20) is None
    assert budget.used == 60


def test_release_and_close_give_everything_back() -> None:
    seen: list[int] = []
    budget = BufferBudget(100, source_share=100, on_change=seen.append)
    session = budget.session(100, "a")
    session.charge(10)
    session.charge(20)
    session.release(10)
    session.close()
    session.close()
    assert (session.used, budget.used, budget.used_by("a")) == (0, 0, 0)
    assert seen == [10, 30, 20, 0]
    assert session.charge(1) is OverloadLimit.SESSION_BUFFERED_BYTES  # closed


def test_releasing_more_than_charged_is_a_bug_not_a_credit() -> None:
    session = BufferBudget(100, source_share=100).session(100, "a")
    session.charge(5)
    with pytest.raises(ValueError, match="more than was charged"):
        session.release(6)
