"""ServiceSettings refuses at start a value the service could not run right with, rather than
misbehave with it later."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from cxkit.settings import ServiceSettings


class KitSettings(ServiceSettings):
    """As a service's settings: read from the environment under its own prefix."""

    model_config = SettingsConfigDict(env_prefix="KIT_TEST_")


@pytest.mark.parametrize("retries", ["0", "-1", "11"])
def test_consumer_max_retries_outside_1_to_10_is_refused_at_start(retries: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 0 a consumer tried a failing poll's events alone zero times and sent every one of
    them, valid events included, to the DLQ unapplied ("handler failed after 0 attempts")."""
    monkeypatch.setenv("KIT_TEST_CONSUMER_MAX_RETRIES", retries)
    with pytest.raises(ValidationError, match="consumer_max_retries"):
        KitSettings()
    with pytest.raises(ValidationError, match="consumer_max_retries"):
        ServiceSettings(consumer_max_retries=int(retries))


@pytest.mark.parametrize("retries", [1, 5, 10])
def test_consumer_max_retries_from_1_to_10_is_taken(retries: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_TEST_CONSUMER_MAX_RETRIES", str(retries))
    assert KitSettings().consumer_max_retries == retries
    assert ServiceSettings().consumer_max_retries == 5


# Setting -> values refused at start (what each did) and values taken (the defaults, what the
# tests, `make run`, the bench and deploy/ set, and the smallest that makes sense).
BOUNDED = {
    # 0 rows a round: the relay went round in a hot loop sending nothing; below 0, every round failed.
    "outbox_batch_size": (["0", "-1"], ["1", "5", "500"]),
    # The relay's wait between polls: at 0 or below it polled without pause.
    "outbox_poll_interval_ms": (["0", "-200"], ["1", "100", "200", "60000"]),
    # Below 0 the housekeeping deleted sent rows at once, leaving `outbox-requeue` nothing; 0 says so on purpose.
    "outbox_retention_hours": (["-1", "-24"], ["0", "24"]),
    # Below 1 a retried write found its first answer expired and ran again.
    "idempotency_ttl_hours": (["0", "-1"], ["1", "24", "48"]),
    # aiokafka refuses a poll of 0 records, and a negative pool or overflow makes no engine.
    "consumer_max_records": (["0", "-1"], ["1", "2", "1000"]),
    "db_pool_size": (["0", "-1"], ["1", "2", "10"]),
    "db_max_overflow": (["-1", "-5"], ["0", "10"]),
    # Topics made with no partitions or replicas cannot be made.
    "kafka_topic_partitions": (["0", "-3"], ["1", "3", "6"]),
    "kafka_topic_replication": (["0", "-1"], ["1", "3"]),
}


@pytest.mark.parametrize(("setting", "value"), [(s, v) for s, (bad, _) in BOUNDED.items() for v in bad])
def test_a_count_size_or_interval_outside_its_bounds_is_refused_at_start(
    setting: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"KIT_TEST_{setting.upper()}", value)
    with pytest.raises(ValidationError, match=setting):
        KitSettings()


@pytest.mark.parametrize(("setting", "value"), [(s, v) for s, (_, good) in BOUNDED.items() for v in good])
def test_a_count_size_or_interval_within_its_bounds_is_taken(setting: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"KIT_TEST_{setting.upper()}", value)
    assert getattr(KitSettings(), setting) == int(value)
