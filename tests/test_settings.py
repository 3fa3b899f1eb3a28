"""The settings contract: env names, duration syntax, and .env.example listing every setting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from domain.durations import parse_duration
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def env_names(model: type[BaseModel], prefix: str = "NUDGE_") -> set[str]:
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = field.alias or field_name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("3d", 259200), ("45", 45), (" 1.5h ", 5400)],
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "ten minutes", "5w", "-3m", "30 mins"])
def test_bad_durations_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 90s, 30m, 24h or 3d"):
        parse_duration(text)


def test_env_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NUDGE_FOLLOWUP__WAITS", "1s, 2m,3h")
    monkeypatch.setenv("NUDGE_REAMAZE__BRAND", "plant-addicts")
    monkeypatch.setenv("NUDGE_REAMAZE__POLL_INTERVAL", "2m")
    monkeypatch.setenv("NUDGE_REAMAZE__REMOVE_TAG_ON_FINISH", "false")
    monkeypatch.setenv("NUDGE_TEMPORAL__TASK_QUEUE", "q1")
    settings = Settings(_env_file=None)
    assert settings.followup.waits == [
        timedelta(seconds=1),
        timedelta(minutes=2),
        timedelta(hours=3),
    ]
    assert settings.reamaze.base_url == "https://plant-addicts.reamaze.io/api/v1"
    assert settings.reamaze.poll_interval == timedelta(minutes=2)
    assert settings.reamaze.remove_tag_on_finish is False
    assert settings.reamaze.trigger_tag == "Needs-Sales-Followup"
    assert settings.temporal.task_queue == "q1"
    assert settings.database_url == "sqlite:///.nudge/nudge.db"
    assert settings.llm_provider == "none"
    assert not settings.gemini.model.startswith("gemini-1.5")


def test_gemini_key_from_google_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini")
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google")
    settings = Settings(_env_file=None)
    assert settings.gemini.api_key.get_secret_value() == "from-google"
    assert settings.llm_provider == "gemini"
    monkeypatch.setenv("NUDGE_GEMINI__API_KEY", "explicit")
    assert Settings(_env_file=None).gemini.api_key.get_secret_value() == "explicit"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGE_FOLLOWUP__WAITS", "30m,soon")
    with pytest.raises(ValidationError, match=r"followup\.waits"):
        Settings(_env_file=None)


def test_env_example_lists_every_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / ".env.example"
    listed = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text().splitlines()
        if "=" in line and line.lstrip("# ").startswith("NUDGE_")
    }
    missing = env_names(Settings) - listed
    assert not missing, f".env.example does not list {sorted(missing)}"
    unknown = listed - env_names(Settings)
    assert not unknown, f".env.example lists settings that do not exist: {sorted(unknown)}"
    Settings(_env_file=example)


SECRETS = {
    "NUDGE_SECRET_KEY": "secret-key-0123456789-abcdefghijklmnop",
    "NUDGE_REAMAZE__API_TOKEN": "secret-reamaze-token",
    "NUDGE_GEMINI__API_KEY": "secret-gemini-key",
    "NUDGE_OPENAI__API_KEY": "secret-openai-key",
    "NUDGE_SMTP__PASSWORD": "secret-smtp-password",
    "NUDGE_TWILIO__AUTH_TOKEN": "secret-twilio-token",
    "NUDGE_WHATSAPP__TOKEN": "secret-whatsapp-token",
    "NUDGE_WHATSAPP__APP_SECRET": "secret-whatsapp-app-secret",
    "NUDGE_WHATSAPP__VERIFY_TOKEN": "secret-whatsapp-verify-token",
    "NUDGE_SUPPORT_BOARD__TOKEN": "secret-support-board-token",
    "NUDGE_TEMPORAL__API_KEY": "secret-temporal-api-key",
    "NUDGE_DATABASE_URL": "postgresql+psycopg://nudge:secret-db-password@db/nudge",
}


def secret_env_names(model: type[BaseModel], prefix: str = "NUDGE_") -> set[str]:
    """Every setting typed ``SecretStr``, by its env name."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{(field.alias or field_name).upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= secret_env_names(annotation, f"{name}__")
        elif annotation is SecretStr:
            names.add(name)
    return names


def test_every_secret_setting_is_a_secret_str() -> None:
    """A new credential typed ``str`` would print in every ``repr`` and traceback."""
    expected = set(SECRETS) - {"NUDGE_DATABASE_URL"}
    missing = expected - secret_env_names(Settings)
    assert not missing, f"these hold secrets but are not SecretStr: {sorted(missing)}"


def test_repr_and_str_of_settings_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.twilio.auth_token.get_secret_value() == SECRETS["NUDGE_TWILIO__AUTH_TOKEN"]
    shown = repr(settings) + str(settings) + str(settings.twilio) + str(settings.whatsapp)
    leaked = sorted(name for name, value in SECRETS.items() if value in shown)
    assert not leaked, f"repr/str show the values of {leaked}"
    dumped = repr(settings.model_dump())
    assert not [
        value for name, value in SECRETS.items() if name != "NUDGE_DATABASE_URL" and value in dumped
    ]


def test_configured_reads_secret_values() -> None:
    empty = Settings(_env_file=None)
    assert not empty.twilio.configured and not empty.whatsapp.configured
    assert not empty.reamaze.configured and not empty.support_board.configured
    filled = Settings(
        _env_file=None,
        twilio={"account_sid": "AC1", "auth_token": "t"},
        whatsapp={"token": "t", "phone_number_id": "1"},
        reamaze={"brand": "shop", "login_email": "a@shop.example", "api_token": "t"},
        support_board={"url": "https://sb.example/include/api.php", "token": "t"},
        openai={"api_key": "k"},
    )
    assert filled.twilio.configured and filled.whatsapp.configured
    assert filled.reamaze.configured and filled.support_board.configured
    assert filled.llm_provider == "openai"


@pytest.mark.parametrize("length", [1, 31])
def test_a_short_secret_key_is_refused_with_how_to_make_one(length: int) -> None:
    with pytest.raises(ValidationError, match="NUDGE_SECRET_KEY") as raised:
        Settings(_env_file=None, secret_key="k" * length)
    assert "secrets.token_urlsafe(32)" in str(raised.value)
    assert "k" * length + "'" not in str(raised.value), "the error does not echo the key"


def test_no_secret_key_is_allowed_by_the_settings_themselves() -> None:
    """Only the processes that make or read links need it (``nudge worker``/``serve``)."""
    assert Settings(_env_file=None, secret_key="").secret_key.get_secret_value() == ""
    assert len(Settings(_env_file=None, secret_key="k" * 32).secret_key.get_secret_value()) == 32
