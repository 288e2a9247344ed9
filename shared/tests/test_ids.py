"""New ids are version 7: they carry the time they were made and sort in the order made."""

from __future__ import annotations

import time
import uuid

from cxkit.db import new_id as db_new_id
from cxkit.ids import new_id, new_id_bytes, new_ids


def test_ids_are_version_7_and_carry_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert before <= int.from_bytes(made.bytes[:6], "big") <= after


def test_ids_made_one_after_another_sort_in_that_order_and_never_repeat() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_models_default_is_the_same_maker() -> None:
    assert db_new_id is new_id


def test_ids_made_as_bytes_are_ids_of_the_same_sequence() -> None:
    """`new_id_bytes` (the import's ids) makes version 7 ids in one increasing sequence with
    `new_id`'s, never repeating one."""
    before = time.time_ns() // 1_000_000
    made = [new_id().bytes if n % 3 == 0 else new_id_bytes() for n in range(9_000)]
    after = time.time_ns() // 1_000_000
    assert all(isinstance(b, bytes) and len(b) == 16 for b in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    first, last = uuid.UUID(bytes=made[0]), uuid.UUID(bytes=made[-1])
    assert first.version == last.version == 7
    assert before <= int.from_bytes(made[0][:6], "big") <= int.from_bytes(made[-1][:6], "big") <= after


def test_ids_made_for_the_driver_are_uuids_of_the_same_sequence() -> None:
    """`new_ids` (bulk writers' ids, as asyncpg's own UUID type) gives `uuid.UUID`s that compare,
    hash and print as any other, in one increasing sequence with `new_id`'s."""
    first = new_id()
    made = new_ids(5_000)
    last = new_id()
    assert len(made) == 5_000 and all(isinstance(i, uuid.UUID) and i.version == 7 for i in made)
    assert [first, *made, last] == sorted([first, *made, last])
    assert len({first, *made, last}) == 5_002
    assert {uuid.UUID(str(i)) for i in made} == set(made)
