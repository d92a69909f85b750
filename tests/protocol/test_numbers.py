"""C-style number parsing of packet and admin fields."""

from __future__ import annotations

import pytest

from geartrain.protocol.numbers import parse_c_int


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"123", 123),
        (b"  42", 42),
        (b"\t7", 7),
        (b"-5", -5),
        (b"+9", 9),
        (b"12abc", 12),
        (b"abc", 0),
        (b"", 0),
        (b"-", 0),
        (b"1 2", 1),
        (b"99999999999999999999999", 99999999999999999999999),
    ],
)
def test_parse_c_int_reads_leading_digits_like_strtoll(text: bytes, value: int) -> None:
    assert parse_c_int(text) == value
