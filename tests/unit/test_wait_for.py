"""wait_for: polls, extends its deadline while progress is made, names what was not met."""

import pytest

from drills.cluster import WaitTimeout, wait_for


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_returns_when_met():
    clock = FakeClock()
    polls = iter([(False, "a"), (False, "b"), (True, "done")])
    assert wait_for(lambda: next(polls), timeout=10, what="x", clock=clock, sleep=clock.sleep) == "done"
    assert clock.now == 2.0


def test_timeout_names_condition_and_last_state():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as e:
        wait_for(lambda: (False, "12 pgs: 12 peering"), timeout=5, what="all PGs active", clock=clock, sleep=clock.sleep)
    assert "all PGs active" in str(e.value) and "12 peering" in str(e.value)
    assert 5.0 <= clock.now < 6.0


def test_progress_extends_the_deadline_up_to_a_cap():
    clock = FakeClock()
    # Progress every poll: waits past the 5 s timeout, but not past timeout + max_extension.
    with pytest.raises(WaitTimeout):
        wait_for(lambda: (False, "recovering"), timeout=5, what="clean", progress=lambda: clock.now,
                 max_extension=20, clock=clock, sleep=clock.sleep)
    assert 24.0 <= clock.now <= 25.0


def test_stalled_progress_does_not_extend():
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        wait_for(lambda: (False, "stuck"), timeout=5, what="clean", progress=lambda: 1.0, clock=clock, sleep=clock.sleep)
    assert clock.now <= 5.0


def test_a_failing_check_is_a_state_not_a_crash():
    clock = FakeClock()

    def check():
        raise OSError("monitor unreachable")

    with pytest.raises(WaitTimeout, match="check failed: OSError: monitor unreachable"):
        wait_for(check, timeout=3, what="HEALTH_OK", clock=clock, sleep=clock.sleep)
