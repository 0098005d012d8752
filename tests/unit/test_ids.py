import time
import uuid

from jobwheel.server.ids import new_id, new_ids


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_batches_of_ids_keep_increasing_across_calls_and_the_millisecond_counter() -> None:
    # 5,000 in one call exhaust the 12-bit counter of a millisecond: the next one is borrowed
    ids = [*new_ids(5_000), new_id(), *new_ids(3)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    # the time part is the millisecond of the call (or one borrowed after it)
    assert abs((uuid.UUID(ids[0]).int >> 80) - time.time_ns() // 1_000_000) < 60_000
    # 62 random bits: every value of the variant's free bits shows up
    assert {text[19] for text in ids} == set("89ab")
    assert new_ids(0) == []
