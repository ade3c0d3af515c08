"""The local backend's metrics ports: two live trials never share one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rheostat.backends.local.process import PortAllocator


def scripted(ports: list[int]) -> Iterator[int]:
    yield from ports


def test_a_port_the_kernel_repeats_is_not_handed_to_a_second_live_trial() -> None:
    # What free_port() did now and then: the kernel returns the same free port twice.
    probe = scripted([40001, 40001, 40001, 40002])
    allocator = PortAllocator(probe=lambda: next(probe))
    first = allocator.allocate()
    second = allocator.allocate()
    assert (first, second) == (40001, 40002)
    assert allocator.held == {40001, 40002}


def test_a_released_port_may_be_handed_out_again() -> None:
    probe = scripted([40001, 40001])
    allocator = PortAllocator(probe=lambda: next(probe))
    assert allocator.allocate() == 40001
    allocator.release(40001)
    assert allocator.allocate() == 40001


def test_a_kernel_that_only_repeats_held_ports_is_an_error_not_a_collision() -> None:
    allocator = PortAllocator(probe=lambda: 40001, attempts=5)
    allocator.allocate()
    with pytest.raises(OSError, match="no free port"):
        allocator.allocate()


def test_many_live_allocations_from_the_real_kernel_are_distinct() -> None:
    allocator = PortAllocator()
    ports = [allocator.allocate() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(1 <= port <= 65535 for port in ports)
