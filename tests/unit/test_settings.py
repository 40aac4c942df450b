"""Settings validation: a wrong value is refused with a message naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from supportgraph.settings import Settings
from tests.conftest import make_settings


@pytest.mark.parametrize(
    "url",
    ["mysql://user@db/support", "sqlite:///data/supportgraph.sqlite", "postgresql+psycopg://h/db"],
)
def test_non_postgres_database_url_is_rejected(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make_settings(database_url=url)
    errors = exc.value.errors()
    assert [e["loc"] for e in errors] == [("database_url",)]
    assert "database_url must start with postgresql://" in errors[0]["msg"]
    assert "unset it for SQLite" in errors[0]["msg"]


def test_bad_database_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTGRAPH_DATABASE_URL", "mysql://user@db/support")
    with pytest.raises(ValidationError, match="database_url"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("postgres://u:p@db/x?sslmode=require", "postgres://u:p@db/x?sslmode=require"),
        ("", None),
        (None, None),
    ],
)
def test_postgres_or_unset_is_accepted(url: str | None, kept: str | None) -> None:
    assert make_settings(database_url=url).database_url == kept


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("llm_max_retries", 11),
        ("low_confidence", 1.5),
        ("port", 0),
        ("durability", "eventually"),
        ("structured_output_method", "xml"),
    ],
)
def test_out_of_range_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        make_settings(**{field: value})
    assert [e["loc"] for e in exc.value.errors()] == [(field,)]


def test_offline_without_an_api_key() -> None:
    assert make_settings().offline is True
    assert make_settings(openai_api_key="sk-test").offline is False
