"""EXIF time zone offsets become ISO 8601 only when they are offsets the world uses."""

from __future__ import annotations

import pytest

from bt_search.media.exif import iso_taken_at


@pytest.mark.parametrize("offset", ["+02:00", "-12:00", "+14:00", "+05:45", "-03:30", "+00:00"])
def test_real_offsets_are_kept(offset):
    assert iso_taken_at("2021:07:04 10:11:12", offset) == f"2021-07-04T10:11:12{offset}"


@pytest.mark.parametrize("offset", ["+99:99", "+05:60", "-14:30", "+15:00", "+2:00", "02:00", "+02:00:00", ""])
def test_impossible_offsets_leave_local_time(offset):
    assert iso_taken_at("2021:07:04 10:11:12", offset) == "2021-07-04T10:11:12"
