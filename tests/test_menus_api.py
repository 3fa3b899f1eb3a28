"""The menus API over real HTTP, on SQLite and on PostgreSQL: CRUD, one 422 naming every
problem of a definition, sessions and stats, roles; and the menus file loaded at start-up."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

import cli
from api.menus import problem_loc
from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition
from settings import get_settings
from store.menu_file import MenuFileError, load_menu_file, read_menu_file
from store.repo import Store
from tests.api_rig import Api
from tests.menus import question_chain, visit_menu

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def handing_to(other: str, name: str = "main_menu", **changes: Any) -> dict[str, Any]:
    """The menu whose "Talk to us" button goes on to the menu ``other``."""
    menu = visit_menu(name, **changes)
    menu["steps"]["initial"]["next"]["human"] = other
    del menu["steps"]["handoff"]
    return menu


def same(got: dict[str, Any], sent: dict[str, Any]) -> bool:
    return MenuDefinition.model_validate(got) == MenuDefinition.model_validate(sent)


def test_the_example_definition_is_sound() -> None:
    assert problems(MenuDefinition.model_validate(visit_menu()), known_menus=set()) == []


# -- CRUD ----------------------------------------------------------------------------------


def test_create_read_replace_delete(api: Api) -> None:
    c, admin = api.client, api.admin
    created = c.post("/v1/menus", json=visit_menu(), headers=admin)
    assert created.status_code == 201, created.text
    assert same(created.json(), visit_menu())
    assert created.json()["steps"]["ask_day"]["validate"] == "date", "aliases on the way out"
    assert api.store.get_menu("main_menu") == MenuDefinition.model_validate(visit_menu())

    got = c.get("/v1/menus/main_menu", headers=admin)
    assert got.status_code == 200 and same(got.json(), visit_menu())
    assert same(c.get("/v1/menus", headers=admin).json()[0], visit_menu())

    changed = visit_menu(priority=7, trigger_keywords=["start"], expiry="2h")
    replaced = c.put("/v1/menus/main_menu", json=changed, headers=admin)
    assert replaced.status_code == 200, replaced.text
    assert same(replaced.json(), changed)
    stored = api.store.get_menu("main_menu")
    assert stored is not None and stored.priority == 7 and stored.expiry == timedelta(hours=2)

    unnamed = visit_menu(priority=2)
    del unnamed["name"]
    made = c.put("/v1/menus/opening_hours", json=unnamed, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "opening_hours"
    assert api.store.menu_names() == {"main_menu", "opening_hours"}

    assert c.delete("/v1/menus/opening_hours", headers=admin).status_code == 204
    assert c.get("/v1/menus/opening_hours", headers=admin).status_code == 404
    assert api.store.menu_names() == {"main_menu"}


def test_list_is_ordered_and_filtered_by_active(api: Api) -> None:
    for name, priority, active in [("b_menu", 1, True), ("a_menu", 1, False), ("top", 5, True)]:
        response = api.client.post(
            "/v1/menus",
            json=visit_menu(name, priority=priority, active=active),
            headers=api.admin,
        )
        assert response.status_code == 201, response.text

    def names(**params: Any) -> list[str]:
        response = api.client.get("/v1/menus", params=params, headers=api.admin)
        assert response.status_code == 200, response.text
        return [menu["name"] for menu in response.json()]

    assert names() == ["top", "a_menu", "b_menu"]
    assert names(active="true") == ["top", "b_menu"]
    assert names(active="false") == ["a_menu"]
    assert api.client.get("/v1/menus?active=maybe", headers=api.admin).status_code == 422


def test_create_twice_is_409(api: Api) -> None:
    assert api.client.post("/v1/menus", json=visit_menu(), headers=api.admin).status_code == 201
    again = api.client.post("/v1/menus", json=visit_menu(priority=3), headers=api.admin)
    assert again.status_code == 409
    assert "main_menu" in again.json()["detail"] and "PUT" in again.json()["detail"]
    stored = api.store.get_menu("main_menu")
    assert stored is not None and stored.priority == 0, "the first one is kept"


def test_put_with_another_name_in_the_body_is_422(api: Api) -> None:
    response = api.client.put("/v1/menus/main_menu", json=visit_menu("other"), headers=api.admin)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "name"]
    assert "main_menu" in error["msg"]
    assert api.store.menu_names() == set()


def test_unknown_menus_are_404_naming_them(api: Api) -> None:
    for method, path in [
        ("GET", "/v1/menus/nope"),
        ("DELETE", "/v1/menus/nope"),
        ("GET", "/v1/menus/nope/sessions"),
        ("GET", "/v1/menus/nope/stats"),
    ]:
        response = api.client.request(method, path, headers=api.admin)
        assert response.status_code == 404, (method, path)
        assert "'nope'" in response.json()["detail"], (method, path)


# -- validation ----------------------------------------------------------------------------


def test_every_problem_comes_back_in_one_422(api: Api) -> None:
    bad = visit_menu(trigger_keywords=["menu", ""])
    buttons = bad["steps"]["initial"]["message"]["action"]["buttons"]
    buttons[1]["reply"]["title"] = "A title far too long for a button"
    bad["steps"]["ask_day"]["next"] = "no_such_menu"
    response = api.client.post("/v1/menus", json=bad, headers=api.admin)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    locs = [error["loc"] for error in errors]
    assert ["body", "trigger_keywords", 1] in locs
    assert [
        "body",
        "steps",
        "initial",
        "message",
        "action",
        "buttons",
        1,
        "reply",
        "title",
    ] in locs
    assert ["body", "steps", "ask_day", "next"] in locs
    assert all(error["type"] == "menu_definition" and error["msg"] for error in errors)
    assert any("no_such_menu" in error["msg"] for error in errors)
    assert api.store.menu_names() == set(), "nothing saved"

    put = api.client.put("/v1/menus/main_menu", json=bad, headers=api.admin)
    assert put.status_code == 422 and put.json()["detail"] == errors
    assert api.store.menu_names() == set()


def test_next_may_name_a_stored_menu(api: Api) -> None:
    menu = handing_to("support")
    refused = api.client.post("/v1/menus", json=menu, headers=api.admin)
    assert refused.status_code == 422
    assert ["body", "steps", "initial", "next", "human"] in [
        error["loc"] for error in refused.json()["detail"]
    ]
    support = api.client.post("/v1/menus", json=visit_menu("support"), headers=api.admin)
    assert support.status_code == 201, support.text
    accepted = api.client.post("/v1/menus", json=menu, headers=api.admin)
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize("pattern", ["(?<=x)a", r"(a)\1"], ids=["lookbehind", "backreference"])
def test_a_pattern_re2_cannot_run_is_a_422_at_its_field(api: Api, pattern: str) -> None:
    menu = visit_menu()
    menu["steps"]["ask_day"]["validate"] = {"regex": pattern}
    for response in (
        api.client.post("/v1/menus", json=menu, headers=api.admin),
        api.client.put("/v1/menus/main_menu", json=menu, headers=api.admin),
    ):
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "steps", "ask_day", "validate", "regex"]
        assert f"the pattern {pattern!r} is not valid" in error["msg"]
        assert "RE2 has no" in error["msg"]
    assert api.store.menu_names() == set()


def test_the_api_answers_while_a_big_menu_is_checked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of a 4,000-question menu is held until another request has been answered,
    which could never happen if the check ran on the event loop (the GET would time out)."""
    checking, answered = threading.Event(), threading.Event()

    def held(definition: MenuDefinition, known_menus: set[str] | None) -> Any:
        checking.set()
        answered.wait(timeout=10)
        return problems(definition, known_menus=known_menus)

    monkeypatch.setattr("api.menus.problems", held)
    big = question_chain(4000)
    with (
        httpx.Client(base_url=api.client.base_url, timeout=30) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        saving = pool.submit(other.put, "/v1/menus/chain", json=big, headers=api.admin)
        assert checking.wait(timeout=10), "the check never started"
        listed = api.client.get("/v1/menus", headers=api.admin, timeout=5)
        answered.set()
        assert listed.status_code == 200 and listed.json() == []
        saved = saving.result()
    assert saved.status_code == 201, saved.text
    assert api.store.menu_names() == {"chain"}


def test_shape_errors_are_fastapis_own_422(api: Api) -> None:
    bad = visit_menu(colour="blue", steps={"initial": {"message": "hi", "nxt": "x"}})
    del bad["start"]
    response = api.client.post("/v1/menus", json=bad, headers=api.admin)
    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "start"] in locs
    assert ["body", "colour"] in locs
    assert ["body", "steps", "initial", "nxt"] in locs


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("name", ["body", "name"]),
        (
            "steps.a.message.action.buttons[3].reply.title",
            ["body", "steps", "a", "message", "action", "buttons", 3, "reply", "title"],
        ),
        ("trigger_keywords[0]", ["body", "trigger_keywords", 0]),
        (
            "steps.a.message.action.sections[1].rows[0].id",
            ["body", "steps", "a", "message", "action", "sections", 1, "rows", 0, "id"],
        ),
    ],
)
def test_problem_paths_become_locs(path: str, loc: list[str | int]) -> None:
    assert problem_loc(path) == loc


# -- sessions and stats --------------------------------------------------------------------


def test_sessions_and_stats(api: Api) -> None:
    store = api.store
    assert api.client.post("/v1/menus", json=visit_menu(), headers=api.admin).status_code == 201
    transcript = [
        {"at": T0.isoformat(), "direction": "in", "text": "menu", "step": "initial"},
        {"at": T0.isoformat(), "direction": "out", "text": "Hello!", "step": "initial"},
    ]
    for n, (outcome, step) in enumerate(
        [("completed", "booked"), ("expired", "ask_day"), ("expired", "ask_day"), (None, None)]
    ):
        sid = f"menu:whatsapp:+1555000000{n}:run"
        store.start_menu_session(
            sid,
            workflow_id=sid.rpartition(":")[0],
            menu="main_menu",
            channel="whatsapp",
            address=f"+1555000000{n}",
            started_at=T0 + timedelta(minutes=n),
        )
        if outcome and step:
            store.end_menu_session(
                sid,
                status=outcome,
                last_step=step,
                context={"day": "2026-12-01"} if outcome == "completed" else {},
                transcript=transcript,
                ended_at=T0 + timedelta(hours=1),
            )

    def sessions(**params: Any) -> list[dict[str, Any]]:
        response = api.client.get("/v1/menus/main_menu/sessions", params=params, headers=api.admin)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    assert [row["address"] for row in sessions()] == [f"+1555000000{n}" for n in (3, 2, 1, 0)]
    assert [row["address"] for row in sessions(limit=1)] == ["+15550000003"]
    [done] = sessions(status="completed")
    assert done["context"] == {"day": "2026-12-01"} and done["transcript"] == transcript
    assert done["last_step"] == "booked" and done["channel"] == "whatsapp"
    assert done["workflow_id"] == "menu:whatsapp:+15550000000"
    assert datetime.fromisoformat(done["ended_at"]) == T0 + timedelta(hours=1)
    assert [row["status"] for row in sessions(status="active")] == ["active"]
    for params in ({"limit": 0}, {"limit": 1001}, {"status": "lost"}):
        response = api.client.get("/v1/menus/main_menu/sessions", params=params, headers=api.admin)
        assert response.status_code == 422, params
    ended_no_session = api.client.get(
        "/v1/menus/main_menu/sessions", params={"status": "fallback"}, headers=api.admin
    )
    assert ended_no_session.status_code == 422
    assert ended_no_session.json()["detail"][0]["loc"] == ["query", "status"]

    stats = api.client.get("/v1/menus/main_menu/stats", headers=api.admin)
    assert stats.status_code == 200, stats.text
    assert stats.json() == {
        "started": 4,
        "active": 1,
        "completed": 1,
        "expired": 2,
        "handed_off": 0,
        "cancelled": 0,
        "moved": 0,
        "drop_off": {"ask_day": 2},
    }


# -- roles ---------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/menus", None),
    ("POST", "/v1/menus", visit_menu()),
    ("GET", "/v1/menus/main_menu", None),
    ("PUT", "/v1/menus/main_menu", visit_menu()),
    ("DELETE", "/v1/menus/main_menu", None),
    ("GET", "/v1/menus/main_menu/sessions", None),
    ("GET", "/v1/menus/main_menu/stats", None),
]


def test_every_route_needs_an_admin_token(api: Api) -> None:
    api.store.save_menu(MenuDefinition.model_validate(visit_menu(priority=4)))
    bad = {"Authorization": "Bearer ndg_not-a-token"}
    for method, path, body in ROUTES:
        for headers in ({}, bad):
            response = api.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        response = api.client.request(method, path, json=body, headers=api.user)
        assert response.status_code == 403, (method, path)
        assert "admin" in response.json()["detail"]
    stored = api.store.get_menu("main_menu")
    assert stored is not None and stored.priority == 4, "nothing changed"


# -- the menus file ------------------------------------------------------------------------


def test_yaml_and_json_files_load(any_store: Store, tmp_path: Path) -> None:
    support = visit_menu("support", priority=3)
    main = handing_to("support")  # a menu later in the same file
    yaml_file = tmp_path / "menus.yaml"
    yaml_file.write_text(yaml.safe_dump([main, support], sort_keys=False))
    assert load_menu_file(any_store, yaml_file) == ["main_menu", "support"]
    assert [m.name for m in any_store.list_menus()] == ["support", "main_menu"]
    assert any_store.get_menu("main_menu") == MenuDefinition.model_validate(main)

    # one object, JSON, naming a menu that is already stored; replaces one of the same name
    single = handing_to("support", "opening", priority=9)
    json_file = tmp_path / "menus.json"
    json_file.write_text(json.dumps(single))
    assert load_menu_file(any_store, json_file) == ["opening"]
    yml_file = tmp_path / "more.yml"
    yml_file.write_text(yaml.safe_dump([visit_menu("support", priority=1)]))
    assert load_menu_file(any_store, yml_file) == ["support"]
    assert [m.name for m in any_store.list_menus()] == ["opening", "support", "main_menu"]
    assert [d.name for d in read_menu_file(yml_file)] == ["support"]


def test_a_bad_file_loads_nothing_and_names_every_problem(any_store: Store, tmp_path: Path) -> None:
    sound = visit_menu("sound")
    unknown_target = visit_menu("dangling")
    unknown_target["steps"]["ask_day"]["next"] = "nowhere"
    no_start = visit_menu("shapeless")
    del no_start["start"]
    path = tmp_path / "menus.yaml"
    path.write_text(yaml.safe_dump([sound, unknown_target, no_start, visit_menu("sound")]))
    with pytest.raises(MenuFileError) as caught:
        load_menu_file(any_store, path)
    message = str(caught.value)
    assert str(path) in message and "4 problems" in message
    assert "menu 'dangling' (#2): steps.ask_day.next: 'nowhere'" in message
    assert "menu 'shapeless' (#3): start: Field required" in message
    assert "menu 'sound' (#4): name: 'sound' is defined more than once" in message
    assert len(caught.value.problems) == 4
    assert any_store.menu_names() == set(), "nothing half-loaded"


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("menus.yaml", "- name: [unclosed", "not valid YAML"),
        ("menus.json", '[{"name": "x",}]', "line 1: not valid JSON"),
        ("menus.yaml", "", "the file is empty"),
        ("menus.json", '"main_menu"', "the file is a str"),
        ("menus.yaml", "- just a string", "definition #1: (definition): Input should be"),
        ("menus.toml", "name = 'x'", ".toml: write it as .yaml, .yml or .json"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, name: str, text: str, says: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MenuFileError, match="menus file .*" + name) as caught:
        read_menu_file(path)
    assert says in str(caught.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(MenuFileError, match=r"menus\.yaml: 1 problem.*\n  cannot be read"):
        read_menu_file(tmp_path / "menus.yaml")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("NUDGE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("NUDGE_SECRET_KEY", "a-test-key-of-at-least-32-characters!")
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()


def test_serve_loads_the_menus_file_first(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(kwargs))
    path = tmp_path / "menus.yaml"
    path.write_text(yaml.safe_dump([visit_menu()]))
    monkeypatch.setenv("NUDGE_MENUS__FILE", str(path))
    result = CliRunner().invoke(cli.app, ["serve"])
    assert result.exit_code == 0, result.output
    assert "menus loaded" in result.output and "main_menu" in result.output
    assert len(started) == 1
    store = Store.from_url(cli_env)
    try:
        assert store.menu_names() == {"main_menu"}
    finally:
        store.close()


def test_serve_stops_on_a_bad_menus_file(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(kwargs))
    bad = copy.deepcopy(visit_menu())
    bad["start"] = "nowhere"
    path = tmp_path / "menus.json"
    path.write_text(json.dumps([bad]))
    monkeypatch.setenv("NUDGE_MENUS__FILE", str(path))
    result = CliRunner().invoke(cli.app, ["serve"])
    assert result.exit_code == 2, result.output
    assert f"menus file {path}" in result.output and "start" in result.output
    assert "Traceback" not in result.output
    assert started == [], "the HTTP service does not start"
