import pytest

from drills.units import format_bytes, parse_bytes, parse_seconds


@pytest.mark.parametrize("text, value", [("256MiB", 256 << 20), ("1.5GiB", 3 << 29), ("4096", 4096), ("2 GiB", 2 << 30), ("10kB", 10000)])
def test_sizes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "12 parsecs", "-1MiB", "MiB", "1.2.3GiB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_bytes(text)


@pytest.mark.parametrize("text, value", [("250ms", 0.25), ("45s", 45.0), ("10min", 600.0), ("1h", 3600.0), (3, 3.0)])
def test_durations(text, value):
    assert parse_seconds(text) == value


@pytest.mark.parametrize("text", ["45", "45 sec", "fast"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_seconds(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 << 29) == "1.5 GiB"
