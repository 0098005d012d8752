from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.execution.ratelimit import TokenBucket


def test_rate_is_respected_over_time() -> None:
    bucket = TokenBucket(rate=10, now=0.0)
    taken = sum(bucket.take(1000, t / 100) for t in range(0, 1001))  # 10 s in 10 ms steps
    assert 100 <= taken <= 111  # 10/s for 10 s plus the initial burst of 10


@given(st.floats(0.1, 1000), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 50)), max_size=50))
def test_never_more_than_rate_times_time_plus_burst(
    rate: float, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, now=0.0)
    now, taken = 0.0, 0
    for dt, want in steps:
        now += dt
        got = bucket.take(want, now)
        assert 0 <= got <= want
        taken += got
    assert taken <= rate * now + max(1.0, rate) + 1e-6


def test_wait_tells_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=2, now=0.0)
    assert bucket.take(5, 0.0) == 2
    assert bucket.wait(0.0) == 0.5
    assert bucket.take(1, 0.5) == 1
