"""The per-daemon memory budget: reservations wait their turn, and give up with BudgetExhausted."""

from __future__ import annotations

import asyncio

import pytest

from relate.runtime.budget import BudgetExhausted, MemoryBudget


async def test_reservations_within_the_budget_are_granted_at_once() -> None:
    """Two reservations that fit together are both held, and released."""
    budget = MemoryBudget(100)
    async with budget.reserve(60, wait=0), budget.reserve(40, wait=0):
        assert budget.in_use == 100
    assert budget.in_use == 0


async def test_a_reservation_that_does_not_fit_waits_for_room() -> None:
    """A reservation over what is left waits until an earlier one is released."""
    budget = MemoryBudget(100)
    first = await budget.acquire(80, wait=0)
    waiter = asyncio.create_task(budget.acquire(50, wait=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    budget.release(first)
    assert await waiter == 50
    assert budget.in_use == 50


async def test_a_reservation_gives_up_after_its_wait() -> None:
    """No room within the wait: BudgetExhausted, and nothing stays reserved."""
    budget = MemoryBudget(100)
    await budget.acquire(100, wait=0)
    with pytest.raises(BudgetExhausted):
        await budget.acquire(1, wait=0.05)
    assert budget.in_use == 100


async def test_first_come_first_served() -> None:
    """A small reservation does not overtake a large one queued before it."""
    budget = MemoryBudget(100)
    held = await budget.acquire(90, wait=0)
    big = asyncio.create_task(budget.acquire(60, wait=5))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(budget.acquire(5, wait=5))
    await asyncio.sleep(0.05)
    assert not small.done()  # 5 would fit beside the 90, but the 60 came first
    budget.release(held)
    assert await big == 60
    assert await small == 5


async def test_a_reservation_larger_than_the_budget_is_cut_to_it() -> None:
    """An oversized message still fits, alone."""
    budget = MemoryBudget(100)
    assert await budget.acquire(1000, wait=0) == 100


async def test_a_cancelled_waiter_leaves_no_reservation() -> None:
    """Cancelling a waiting reservation (the client went away) frees its place in the queue."""
    budget = MemoryBudget(100)
    held = await budget.acquire(100, wait=0)
    waiter = asyncio.create_task(budget.acquire(50, wait=5))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(held)
    assert budget.in_use == 0
