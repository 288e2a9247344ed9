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
