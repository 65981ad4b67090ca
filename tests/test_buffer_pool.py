"""The pool of segment buffers (``origin.packaging.buffer_pool``), in-process."""

from __future__ import annotations

import threading

import pytest

from origin.packaging.buffer_pool import GRANULE, BufferPool


def test_a_taken_buffer_fits_and_is_reused_after_release() -> None:
    pool = BufferPool(keep=2)
    lease = pool.take(GRANULE + 1)
    assert lease.capacity == 2 * GRANULE
    lease.view[:5] = b"first"
    lease.release()
    again = pool.take(100)
    assert again.capacity == 2 * GRANULE  # the same mapping, not a fresh one
    assert bytes(again.view[:5]) == b"first"  # contents are whatever was left
    assert pool.mapped == 1
    assert pool.take(3 * GRANULE).capacity == 3 * GRANULE  # too big for the free ones
    assert pool.mapped == 2


def test_the_smallest_fitting_buffer_is_handed_out() -> None:
    pool = BufferPool(keep=4)
    leases = [pool.take(n * GRANULE) for n in (3, 1, 2)]
    for lease in leases:
        lease.release()
    assert pool.take(GRANULE + 5).capacity == 2 * GRANULE
    assert pool.take(10).capacity == GRANULE
    assert pool.take(10).capacity == 3 * GRANULE
    assert pool.mapped == 3


def test_release_is_idempotent_and_blanks_the_view() -> None:
    pool = BufferPool(keep=4)
    lease = pool.take(10)
    lease.release()
    lease.release()
    assert pool.free == 1  # given back once, not twice
    assert len(lease.view) == 0
    assert "released" in repr(lease)


def test_the_pool_keeps_at_most_keep_buffers_and_none_too_large() -> None:
    pool = BufferPool(keep=2, max_kept=2 * GRANULE)
    leases = [pool.take(GRANULE) for _ in range(4)]
    for lease in leases:
        lease.release()
    assert pool.free == 2
    big = pool.take(3 * GRANULE)
    big.release()
    assert pool.free == 2
    assert all(pool.take(1).capacity == GRANULE for _ in range(2))


def test_a_larger_buffer_given_back_replaces_the_smallest_kept() -> None:
    pool = BufferPool(keep=1)
    small, large = pool.take(1), pool.take(2 * GRANULE)
    small.release()
    large.release()
    assert pool.free == 1
    assert pool.take(1).capacity == 2 * GRANULE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_of_equal_buffers_the_most_recently_given_back_is_reused() -> None:
    pool = BufferPool(keep=4)
    first, second = pool.take(10), pool.take(10)
    first.view[:1], second.view[:1] = b"1", b"2"
    first.release()
    second.release()
    again = pool.take(10)
    assert bytes(again.view[:1]) == b"2"


def test_buffers_idle_past_idle_after_are_dropped_and_busy_ones_kept() -> None:
    clock = FakeClock()
    pool = BufferPool(keep=4, idle_after=30.0, clock=clock)
    burst = [pool.take(2 * GRANULE) for _ in range(3)]  # a burst: three at once
    for lease in burst:
        lease.release()
    assert pool.free == 3
    for _ in range(10):  # then steady traffic, one at a time, for 50 s
        clock.now += 5
        pool.take(2 * GRANULE).release()
    assert pool.free == 1  # the two the burst left idle are gone, the busy one stays
    assert pool.dropped_idle == 2
    assert pool.mapped == 3
    clock.now += 31  # no traffic: nothing is dropped until the pool is used again
    assert pool.free == 1
    pool.take(10).release()
    assert pool.dropped_idle == 3 and pool.free == 1


def test_nothing_kept_when_keep_is_zero() -> None:
    pool = BufferPool(keep=0)
    pool.take(1).release()
    assert pool.free == 0


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        BufferPool().take(-1)
    with pytest.raises(ValueError):
        BufferPool(keep=-1)


def test_threads_never_share_a_taken_buffer() -> None:
    pool = BufferPool(keep=4)
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(mark: int) -> None:
        start.wait()
        for _ in range(200):
            lease = pool.take(GRANULE)
            lease.view[:GRANULE] = bytes([mark]) * GRANULE
            if lease.view[:GRANULE] != bytes([mark]) * GRANULE:
                errors.append(f"thread {mark} saw another thread's bytes")
            lease.release()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert pool.free <= 4
    assert pool.mapped >= pool.free
