"""Settings validation: a wrong value is refused with a message naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
        Settings(_env_file=None)


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


KEY_WATCH = """
import json, os, sys
from pathlib import Path

folder = Path(sys.argv[1])
seen = []
busy = []


def watch(event, args):
    # At every operation, the mode of every key file that exists at that moment (the look
    # itself raises events: those are not watched).
    if busy or not event.startswith(("os.", "open")):
        return
    busy.append(1)
    try:
        for name in os.listdir(folder):
            if "secret_key" in name:
                try:
                    seen.append([event, name, os.stat(folder / name).st_mode & 0o777])
                except FileNotFoundError:
                    pass
    finally:
        busy.pop()


os.umask(0o022)
sys.addaudithook(watch)
from supportgraph.settings import Settings

key = Settings(_env_file=None, sqlite_path=folder / "sg.sqlite").signing_key()
busy.append(1)
print(json.dumps({"seen": seen, "key": len(key)}))
"""


def test_the_generated_key_file_is_never_readable_by_others(tmp_path: Path) -> None:
    """Watched at every file operation (audit hooks, in a process of its own): from the moment
    it exists, the key (and its draft) is readable by its owner only."""
    run = subprocess.run(
        [sys.executable, "-c", KEY_WATCH, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SUPPORTGRAPH_")},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["key"] >= 48
    assert out["seen"], "the key file was never seen"
    loose = [s for s in out["seen"] if s[2] & 0o077]
    assert loose == [], loose
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"], "no draft is left behind"
