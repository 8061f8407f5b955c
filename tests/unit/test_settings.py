"""Settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.bus import retry_delay
from shared.settings import DEFAULT_HEALTH_PORTS, Settings, async_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_the_asyncpg_driver(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


def test_a_non_postgres_database_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="must start with postgresql://"):
        async_database_url("mysql://root@localhost/kaiten")


def test_standard_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("DATABASE_URL", "postgresql://kaiten@db/kaiten")
    monkeypatch.setenv("KUBECONFIG", "/etc/kaiten/kubeconfig")
    monkeypatch.setenv("KAITEN_MAX_DELIVER", "7")
    s = Settings()
    assert s.nats_url == "nats://nats:4222"
    assert s.database_url == "postgresql+asyncpg://kaiten@db/kaiten"
    assert s.kubeconfig == "/etc/kaiten/kubeconfig"
    assert s.max_deliver == 7


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITEN_SUBJECT_PREFIX", "kaiten.prod")
    with pytest.raises(ValidationError, match="subject_prefix"):
        Settings()


def test_each_service_has_its_own_health_port_unless_one_is_set() -> None:
    assert Settings().health_port_for("planner") == DEFAULT_HEALTH_PORTS["planner"]
    assert len(set(DEFAULT_HEALTH_PORTS.values())) == 5
    assert Settings(health_port=9000).health_port_for("planner") == 9000


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 10.0), (30, 10.0)],
)
def test_retry_delay_doubles_up_to_the_cap(deliveries: int, expected: float) -> None:
    assert retry_delay(deliveries, base=0.5, cap=10.0) == expected
