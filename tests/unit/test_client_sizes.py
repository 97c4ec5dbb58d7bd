"""Byte counts read the same in every command: whole bytes below 1 KiB, then one decimal of the unit."""

import pytest

from client.sizes import human_size


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 B"),
        (33, "33 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (1024**3, "1.0 GiB"),
        (3 * 1024**5, "3,072.0 TiB"),
        (1234.5, "1.2 KiB"),
    ],
)
def test_human_size_picks_the_largest_unit_that_keeps_the_number_at_least_one(n, shown):
    assert human_size(n) == shown
