"""docker-compose.yml and the Dockerfile agree with settings.py (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from settings import Settings
from tests.test_settings import env_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_COMMANDS = {
    "nudge-migrate": ["nudge", "db", "upgrade"],
    "worker": ["nudge", "worker"],
    "api": ["nudge", "serve"],
}


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def resolved(value: str) -> str:
    """`${NAME:-default}` as compose would resolve it with NAME unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        assert ("image" in service) != ("build" in service), f"{name}: exactly one of image/build"


@pytest.mark.parametrize("service", sorted(APP_COMMANDS))
def test_app_services_run_the_one_image_with_their_command(service: str) -> None:
    assert SERVICES[service]["build"] == ".", f"{service} builds the project's Dockerfile"
    assert SERVICES[service]["command"] == APP_COMMANDS[service]


def test_every_nudge_variable_is_a_real_setting() -> None:
    known = env_names(Settings)
    for service in SERVICES:
        unknown = {key for key in environment(service) if key.startswith("NUDGE_")} - known
        assert not unknown, f"{service} sets variables settings.py does not read: {sorted(unknown)}"


@pytest.mark.parametrize("service", sorted(APP_COMMANDS))
def test_app_settings_parse(service: str) -> None:
    env = {key: resolved(value) for key, value in environment(service).items()}
    nested: dict[str, Any] = {}
    for key, value in env.items():
        parts = key.removeprefix("NUDGE_").lower().split("__")
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    Settings(_env_file=None, **nested)


def test_api_listens_on_the_published_port() -> None:
    env = environment("api")
    assert env["NUDGE_HTTP__HOST"] == "0.0.0.0", "inside a container the API must listen on all"
    published = [str(p).split(":") for p in SERVICES["api"]["ports"]]
    assert [env["NUDGE_HTTP__PORT"]] == [container for *_, container in published]


def test_temporal_address_names_the_temporal_service() -> None:
    host, port = environment("worker")["NUDGE_TEMPORAL__ADDRESS"].split(":")
    assert host in SERVICES and "auto-setup" in SERVICES[host]["image"]
    assert f"{port}:{port}" in SERVICES[host]["ports"]


def test_database_url_matches_the_postgres_service() -> None:
    url = make_url(environment("worker")["NUDGE_DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg"
    db = environment(str(url.host))
    assert SERVICES[str(url.host)]["image"].startswith("postgres")
    assert (url.username, url.password, url.database) == (
        db["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
        db["POSTGRES_DB"],
    )
    temporal = environment("temporal")
    assert temporal["POSTGRES_SEEDS"] == url.host
    assert (temporal["POSTGRES_USER"], temporal["POSTGRES_PWD"]) == (url.username, url.password)


def test_depends_on_names_existing_services() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_dockerfile_installs_pinned_and_runs_the_worker() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    assert dockerfile.strip().splitlines()[-1] == 'CMD ["nudge", "worker"]'
    assert "EXPOSE 8000" in dockerfile


def test_the_search_attributes_registered_are_the_workflows_ones() -> None:
    from workflows.search_attributes import ALL

    script = " ".join(SERVICES["temporal-search-attributes"]["command"])
    registered = set(re.search(r"for name in ([\w ]+); do", script).group(1).split())  # type: ignore[union-attr]
    assert registered == {key.name for key in ALL}
    assert "--type Keyword" in script
