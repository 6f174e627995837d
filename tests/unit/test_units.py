import argparse

import pytest

from drills.thresholds import parse_size
from drills.units import GiB, format_bytes, parse_bytes, parse_seconds, size_arg


@pytest.mark.parametrize("text, value", [("256MiB", 256 << 20), ("1.5GiB", 3 << 29), ("4096", 4096), ("2 GiB", 2 << 30),
                                         ("10KiB", 10240), ("3B", 3), (7, 7)])
def test_sizes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "12 parsecs", "MiB", "1.2.3GiB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError, match="is not a size|is not one of"):
        parse_bytes(text)


@pytest.mark.parametrize("text, fix", [("2G", "2GiB"), ("2GB", "2GiB"), ("10kB", "10KiB"), ("1.5gib", "1.5GiB"), ("4M", "4MiB")])
def test_sizes_that_could_be_guessed_two_ways_are_refused_with_the_fix(text, fix):
    # Ceph and fio read 2G as 2 GiB, SI reads 2GB as 2e9 bytes: one rule, said in the error
    with pytest.raises(ValueError, match=f"ambiguous.*e.g. '{fix}'"):
        parse_bytes(text)


def test_negative_sizes_and_durations_are_refused():
    for bad, parse in (("-1MiB", parse_bytes), (-1, parse_bytes), ("-5s", parse_seconds), (-5, parse_seconds)):
        with pytest.raises(ValueError, match="cannot be negative"):
            parse(bad)


def test_one_rule_for_the_command_line_and_the_thresholds_file():
    # the thresholds file also wants the unit said; otherwise the two read a size the same way
    for text in ("256MiB", "1.5GiB", "2 GiB", "100B"):
        assert parse_size(text) == parse_bytes(text) == size_arg(text)
    for text in ("2GB", "2G", "2gib"):
        with pytest.raises(ValueError):
            parse_size(text)
        with pytest.raises(argparse.ArgumentTypeError):
            size_arg(text)
    with pytest.raises(ValueError, match="say the unit"):
        parse_size("2048")
    assert size_arg("2048") == 2048 and GiB == 1 << 30


@pytest.mark.parametrize("text, value", [("250ms", 0.25), ("45s", 45.0), ("10min", 600.0), ("1h", 3600.0), (3, 3.0)])
def test_durations(text, value):
    assert parse_seconds(text) == value


@pytest.mark.parametrize("text", ["45", "45 sec", "fast", "10m"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration|is not one of"):
        parse_seconds(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 << 29) == "1.5 GiB"
