"""docker-compose.yml and the Dockerfile agree with settings.py and each other.

No Docker engine is needed: the files are read as YAML and text and checked for the
mistakes that otherwise only show up at ``docker compose up`` (a misspelt NUDGE_ variable
that is silently ignored, a port or host that does not line up, a search attribute the
workflows set but nobody registered).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url

import settings
from workflows.search_attributes import ALL

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()

APP_COMMANDS = {
    "nudge-migrate": ["nudge", "db", "upgrade"],
    "worker": ["nudge", "worker"],
    "api": ["nudge", "serve"],
}
SEARCH_ATTRIBUTES = {"NudgeKind", "NudgeStatus", "ContactId", "Channel"}
TEMPORAL_PORT = "7233"
DEPENDENCY_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# --- helpers -------------------------------------------------------------------------------


def setting_env_names(model: type[BaseModel], prefix: str = "NUDGE_") -> set[str]:
    """Every environment variable the settings tree reads: nested models become ``A__B``,
    a field with an alias is read by its alias (``smtp.from_`` is ``NUDGE_SMTP__FROM``)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{field.alias or name}".upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, f"{env_name}__")
        else:
            names.add(env_name)
    return names


def raw_environment(service: str) -> dict[str, str | None]:
    """A service's environment as written; None for a bare ``NAME`` (compose passes the value
    from .env or the shell when one is set, and leaves the variable unset otherwise)."""
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(key): None if value is None else str(value) for key, value in env.items()}


def environment(service: str) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or a list."""
    return {key: value or "" for key, value in raw_environment(service).items()}


def resolved(value: str) -> str:
    """The value compose passes on when none of the referenced variables is set."""
    value = value.replace("$$", "\0")

    def substitute(match: re.Match[str]) -> str:
        operator, default = match.group(2), match.group(3)
        return default if operator in (":-", "-") else ""

    return INTERPOLATION.sub(substitute, value).replace("\0", "$")


def command_words(service: str) -> list[str]:
    command = SERVICES[service].get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def command_text(service: str) -> str:
    command = SERVICES[service].get("command") or ""
    return command if isinstance(command, str) else "\n".join(str(part) for part in command)


def dependencies(service: str) -> dict[str, str]:
    """depends_on as ``{service: condition}`` (the list form means service_started)."""
    depends = SERVICES[service].get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()
    }


def container_ports(service: str) -> list[str]:
    """The container side of every published port (short or long syntax)."""
    ports: list[str] = []
    for entry in SERVICES[service].get("ports") or []:
        if isinstance(entry, dict):
            ports.append(str(entry["target"]))
        else:
            ports.append(str(entry).split("/")[0].rsplit(":", 1)[-1])
    return ports


def services_with_image(prefix: str) -> list[str]:
    return [
        name for name, spec in SERVICES.items() if str(spec.get("image", "")).startswith(prefix)
    ]


def the_service_with_image(prefix: str) -> str:
    found = services_with_image(prefix)
    assert len(found) == 1, f"expected one service running {prefix}*, found {found}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    instructions = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def exec_or_shell_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


def postgres_service() -> str:
    return the_service_with_image("postgres:")


def temporal_service() -> str:
    return the_service_with_image("temporalio/auto-setup")


def search_attribute_service() -> str:
    return the_service_with_image("temporalio/admin-tools")


# --- (a) images and commands -------------------------------------------------------------


def test_every_service_has_exactly_one_of_image_or_build() -> None:
    for name, spec in SERVICES.items():
        has_image, has_build = "image" in spec, "build" in spec
        assert has_image != has_build, (
            f"service {name!r} must have exactly one of image/build "
            f"(image: {has_image}, build: {has_build})"
        )


@pytest.mark.parametrize("service", sorted(APP_COMMANDS))
def test_app_services_run_the_project_image_with_their_command(service: str) -> None:
    assert service in SERVICES, f"docker-compose.yml has no {service!r} service"
    build = SERVICES[service].get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"{service!r} must build the project's Dockerfile (build: .)"
    assert command_words(service) == APP_COMMANDS[service], (
        f"{service!r} must run {' '.join(APP_COMMANDS[service])!r}, "
        f"not {' '.join(command_words(service))!r}"
    )


def test_only_the_app_services_build_the_image() -> None:
    building = {name for name, spec in SERVICES.items() if "build" in spec}
    assert building == set(APP_COMMANDS), (
        f"the services built from ./Dockerfile should be {sorted(APP_COMMANDS)}, are {sorted(building)}"
    )


# --- (b) every NUDGE_ variable is a setting ------------------------------------------------


def test_the_settings_walk_finds_nested_names() -> None:
    names = setting_env_names(settings.Settings)
    for expected in ("NUDGE_DATABASE_URL", "NUDGE_TEMPORAL__ADDRESS", "NUDGE_REAMAZE__API_TOKEN"):
        assert expected in names, f"{expected} missing from the names derived from settings.py"
    assert "NUDGE_TEMPORAL" not in names, "a nested model is not itself a variable"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_nudge_variable_is_a_real_setting(service: str) -> None:
    known = setting_env_names(settings.Settings)
    env = environment(service)
    unknown = sorted(key for key in env if key.startswith("NUDGE_") and key not in known)
    assert not unknown, (
        f"{service!r} sets {unknown}, which settings.py does not read (a typo is silently ignored)"
    )
    passed_through = {
        match.group(1)
        for value in env.values()
        for match in INTERPOLATION.finditer(value.replace("$$", ""))
        if match.group(1).startswith("NUDGE_")
    }
    unknown_sources = sorted(passed_through - known)
    assert not unknown_sources, (
        f"{service!r} passes through ${{...}} variables that are not settings: {unknown_sources}"
    )


@pytest.mark.parametrize("service", sorted(APP_COMMANDS))
def test_app_environment_is_valid_settings_with_nothing_set(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty pass-throughs must still parse (e.g. NUDGE_LLM__PROVIDER="" would not)."""
    for name in list(os.environ):
        if name.startswith("NUDGE_"):
            monkeypatch.delenv(name)
    for key, value in raw_environment(service).items():
        if value is not None:  # a bare pass-through of nothing is left unset
            monkeypatch.setenv(key, resolved(value))
    try:
        parsed = settings.Settings(_env_file=None)
    except Exception as exc:
        pytest.fail(f"{service!r}'s environment is not valid settings: {exc}")
    assert parsed.database_url == resolved(environment(service)["NUDGE_DATABASE_URL"])


# --- (b2) one .env reaches the worker and the api alike ---------------------------------------

FIXED_BY_THE_STACK = {
    "NUDGE_DATABASE_URL",
    "NUDGE_TEMPORAL__ADDRESS",
    "NUDGE_TEMPORAL__NAMESPACE",
    "NUDGE_HTTP__PORT",
}
"""Where the services find each other inside the compose network: not the operator's to set."""
SECRET_KEY_REQUIRED = re.compile(r"\$\{NUDGE_SECRET_KEY:\?[^}]+\}")


def passes_through(name: str, value: str | None) -> bool:
    """The value comes from .env or the shell under the same name (bare, or ``${NAME...}``)."""
    if value is None:
        return True
    match = INTERPOLATION.fullmatch(value)
    return match is not None and match.group(1) == name


@pytest.mark.parametrize("service", ["worker", "api"])
def test_every_setting_reaches_the_worker_and_the_api(service: str) -> None:
    """A setting left out here is silently its default in the container, whatever .env says
    (how a provider's credentials or the secret key went missing before)."""
    missing = sorted(setting_env_names(settings.Settings) - set(raw_environment(service)))
    assert not missing, f"{service!r} is not given {missing}; add them to x-nudge-env"


@pytest.mark.parametrize("service", ["worker", "api"])
def test_settings_come_from_env_unless_the_stack_fixes_them(service: str) -> None:
    env = raw_environment(service)
    fixed = FIXED_BY_THE_STACK | ({"NUDGE_HTTP__HOST"} if service == "api" else set())
    hard_coded = sorted(
        name
        for name, value in env.items()
        if name.startswith("NUDGE_") and name not in fixed and not passes_through(name, value)
    )
    assert not hard_coded, f"{service!r} does not take {hard_coded} from .env or the shell"


def test_the_secret_key_is_required_and_the_same_for_worker_and_api() -> None:
    """Links the worker makes must open in the api: one key, and compose stops without it."""
    values = {service: raw_environment(service).get("NUDGE_SECRET_KEY") for service in APP_COMMANDS}
    for service, value in values.items():
        assert value is not None and SECRET_KEY_REQUIRED.fullmatch(value), (
            f"{service!r} must require the key: NUDGE_SECRET_KEY: "
            "${NUDGE_SECRET_KEY:?set NUDGE_SECRET_KEY in .env}, not " + repr(value)
        )
    assert len(set(values.values())) == 1


def test_worker_and_api_share_one_environment() -> None:
    worker, api = raw_environment("worker"), raw_environment("api")
    worker.pop("NUDGE_HTTP__HOST", None)
    api.pop("NUDGE_HTTP__HOST", None)
    assert worker == api, "the worker and the api must read the same settings (x-nudge-env)"


def test_the_pass_through_checks_catch_what_they_should() -> None:
    assert passes_through("NUDGE_A", None) and passes_through("NUDGE_A", "${NUDGE_A:-x}")
    assert not passes_through("NUDGE_A", "${NUDGE_B}") and not passes_through("NUDGE_A", "x")
    assert "NUDGE_SMTP__FROM" in setting_env_names(settings.Settings)
    assert SECRET_KEY_REQUIRED.fullmatch("${NUDGE_SECRET_KEY:?set it}")
    assert not SECRET_KEY_REQUIRED.fullmatch("${NUDGE_SECRET_KEY:-}")


# --- (c) the API listens where it is published ---------------------------------------------


def test_api_listens_on_all_interfaces_on_the_published_port() -> None:
    env = environment("api")
    assert env.get("NUDGE_HTTP__HOST") == "0.0.0.0", (
        "inside a container the API must listen on 0.0.0.0, "
        f"not {env.get('NUDGE_HTTP__HOST', '127.0.0.1 (the default)')}"
    )
    port = env.get("NUDGE_HTTP__PORT", str(settings.HttpSettings().port))
    published = container_ports("api")
    assert published, "the api publishes no port"
    assert set(published) == {port}, (
        f"the api listens on {port} but publishes container port(s) {published}"
    )
    assert f"EXPOSE {port}" in DOCKERFILE, f"the Dockerfile should EXPOSE {port}"


# --- (d) Temporal is reached through its service name ---------------------------------------


def test_everything_reaches_temporal_by_its_service_name() -> None:
    temporal = temporal_service()
    expected = f"{temporal}:{TEMPORAL_PORT}"
    clients = {name: environment(name).get("NUDGE_TEMPORAL__ADDRESS") for name in APP_COMMANDS}
    clients["temporal-ui"] = environment("temporal-ui").get("TEMPORAL_ADDRESS")
    clients[search_attribute_service()] = environment(search_attribute_service()).get(
        "TEMPORAL_ADDRESS"
    )
    wrong = {name: address for name, address in clients.items() if address != expected}
    assert not wrong, f"Temporal is {expected!r} inside the compose network; these differ: {wrong}"
    assert TEMPORAL_PORT in container_ports(temporal), (
        f"the {temporal!r} service should publish its frontend port {TEMPORAL_PORT}"
    )


def test_everything_uses_one_temporal_namespace() -> None:
    namespaces = {name: environment(name).get("NUDGE_TEMPORAL__NAMESPACE") for name in APP_COMMANDS}
    namespaces["temporal (DEFAULT_NAMESPACE)"] = environment(temporal_service()).get(
        "DEFAULT_NAMESPACE", "default"
    )
    namespaces["search attributes"] = environment(search_attribute_service()).get(
        "TEMPORAL_NAMESPACE", "default"
    )
    values = {value or settings.TemporalSettings().namespace for value in namespaces.values()}
    assert len(values) == 1, f"the namespace differs between services: {namespaces}"


# --- (e) the database URL matches the postgres service --------------------------------------


def test_database_url_matches_the_postgres_service() -> None:
    database = postgres_service()
    db_env = environment(database)
    for service in APP_COMMANDS:
        url = make_url(environment(service)["NUDGE_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg", (
            f"{service!r} must use the psycopg 3 driver, not {url.drivername!r}"
        )
        assert url.host == database, f"{service!r} connects to {url.host!r}, not {database!r}"
        assert url.port in (None, 5432), f"{service!r} connects to port {url.port}, not 5432"
        assert (url.username, url.password, url.database) == (
            db_env.get("POSTGRES_USER"),
            db_env.get("POSTGRES_PASSWORD"),
            db_env.get("POSTGRES_DB"),
        ), f"{service!r}'s user/password/database differ from the {database!r} service's"


def test_temporal_stores_its_data_on_the_postgres_service() -> None:
    database, temporal = postgres_service(), temporal_service()
    db_env, temporal_env = environment(database), environment(temporal)
    assert temporal_env.get("DB") == "postgres12", "auto-setup's PostgreSQL driver is postgres12"
    assert temporal_env.get("POSTGRES_SEEDS") == database, (
        f"Temporal's POSTGRES_SEEDS should be {database!r}"
    )
    assert temporal_env.get("DB_PORT") == "5432", "Temporal's DB_PORT should be 5432"
    assert (temporal_env.get("POSTGRES_USER"), temporal_env.get("POSTGRES_PWD")) == (
        db_env.get("POSTGRES_USER"),
        db_env.get("POSTGRES_PASSWORD"),
    ), "Temporal's POSTGRES_USER/POSTGRES_PWD must be a role the postgres service creates"
    temporal_databases = {
        temporal_env.get("DBNAME", "temporal"),
        temporal_env.get("VISIBILITY_DBNAME", "temporal_visibility"),
    }
    assert db_env.get("POSTGRES_DB") not in temporal_databases, (
        "Temporal's databases must not be Nudge's own database"
    )


# --- (f) depends_on -----------------------------------------------------------------------


def test_depends_on_names_services_that_exist_with_valid_conditions() -> None:
    for name in SERVICES:
        for dependency, condition in dependencies(name).items():
            assert dependency in SERVICES, (
                f"{name!r} depends on {dependency!r}, which is no service"
            )
            assert dependency != name, f"{name!r} depends on itself"
            assert condition in DEPENDENCY_CONDITIONS, (
                f"{name!r} waits for {dependency!r} with unknown condition {condition!r}"
            )
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], (
                    f"{name!r} waits for {dependency!r} to be healthy, but it has no healthcheck"
                )


def test_one_shot_services_run_once_and_gate_the_app() -> None:
    one_shots = {"nudge-migrate", search_attribute_service()}
    for name in one_shots:
        restart = SERVICES[name].get("restart", "no")
        assert restart == "no", f"{name!r} runs once; its restart must be the string 'no'"
    for service in ("worker", "api"):
        waits_for = dependencies(service)
        for one_shot in one_shots:
            assert waits_for.get(one_shot) == "service_completed_successfully", (
                f"{service!r} must wait for {one_shot!r} to complete successfully"
            )


# --- (g) the Dockerfile -------------------------------------------------------------------


def test_dockerfile_runs_the_worker_and_installs_pinned() -> None:
    instructions = dockerfile_instructions()
    commands = [arguments for keyword, arguments in instructions if keyword == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    assert exec_or_shell_form(commands[-1]) == ["nudge", "worker"], (
        f"the image's default command must be 'nudge worker', is {commands[-1]!r}"
    )
    installs = [
        arguments
        for keyword, arguments in instructions
        if keyword == "RUN" and re.search(r"pip install\b.*\s\.(\s|$)", arguments)
    ]
    assert installs, "the Dockerfile never pip-installs the project (pip install ... .)"
    for install in installs:
        assert "-c constraints.txt" in install, (
            f"the project must be installed against the pins: {install!r}"
        )
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in instructions), (
        "an ENTRYPOINT would change how compose's `command:` is run"
    )


def test_dockerfile_copies_the_pins_before_the_source_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    assert copies, "the Dockerfile copies nothing"
    first = copies[0].split()
    assert "pyproject.toml" in first and "constraints.txt" in first, (
        f"pyproject.toml and constraints.txt should be copied first (for the layer cache): {copies[0]!r}"
    )
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must not run as root"


def test_dockerfile_copies_every_module_the_project_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools_config = project["tool"]["setuptools"]
    wanted = {f"{module}.py" for module in setuptools_config.get("py-modules", [])}
    wanted |= {
        pattern.rstrip("*")
        for pattern in setuptools_config.get("packages", {}).get("find", {}).get("include", [])
    }
    copied: set[str] = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            sources = [word for word in arguments.split() if not word.startswith("--")][:-1]
            copied |= {source.rstrip("/") for source in sources}
    assert "." not in copied, "COPY . would bake .env, .venv and .nudge into the image"
    missing = sorted(wanted - copied)
    assert not missing, f"the Dockerfile does not copy {missing}, which pyproject.toml packages"


# --- (h) the search attributes -------------------------------------------------------------


def test_the_registered_search_attributes_are_the_workflows_keywords() -> None:
    service = search_attribute_service()
    script = command_text(service)
    assert "search-attribute create" in script, f"{service!r} does not create search attributes"
    pairs = re.findall(r"--name[ =]+(\w+)\s+--type[ =]+(\w+)", script)
    registered = {name for name, _ in pairs}
    assert registered == SEARCH_ATTRIBUTES, (
        f"{service!r} registers {sorted(registered)}, not {sorted(SEARCH_ATTRIBUTES)}"
    )
    assert registered == {key.name for key in ALL}, (
        "the registered attributes differ from workflows/search_attributes.ALL"
    )
    wrong_types = sorted(name for name, kind in pairs if kind.lower() != "keyword")
    assert not wrong_types, f"these must be registered as Keyword: {wrong_types}"
    assert "|| true" not in script, "a failed registration must fail the service, not be ignored"
    assert dependencies(service).get(temporal_service()) == "service_healthy", (
        f"{service!r} must wait for Temporal to be healthy"
    )


def test_every_top_level_module_is_installed_and_in_the_image() -> None:
    """A module at the top of the tree that the package or the image leaves out works in a
    checkout and fails as ``nudge serve`` installed, or in the container."""
    root = Path(__file__).resolve().parent.parent
    modules = {path.stem for path in root.glob("*.py")}
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert set(project["tool"]["setuptools"]["py-modules"]) == modules
    copied = {
        name.removesuffix(".py")
        for line in (root / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for name in line.split()[1:-1]
        if name.endswith(".py")
    }
    assert copied == modules
