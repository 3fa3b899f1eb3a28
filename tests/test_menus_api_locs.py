"""The menus API's 422 bodies name the field that is wrong, as written."""

from __future__ import annotations

import copy
from typing import Any

from tests.api_rig import Api
from tests.menus import visit_menu


def test_a_problem_in_a_step_whose_name_has_a_dot_names_that_step(api: Api) -> None:
    """Step names are free dict keys (nothing forbids "ask.day"), but ``problem_loc``
    splits a problem's path on every "." : the problem of step "ask.day" comes back with
    loc ["body", "steps", "ask", "day", "message"], naming a step "ask" that does not
    exist. (FastAPI's own 422s keep the key whole, so the two kinds of 422 disagree.)

    Right: the loc names the step as it is written: ["body", "steps", "ask.day", "message"]
    (or step names like this are refused, with their own loc).
    """
    menu = visit_menu()
    steps = menu["steps"]
    steps["ask.day"] = copy.deepcopy(steps.pop("ask_day"))
    steps["ask.day"]["message"] = ""  # a problem inside the step
    steps["initial"]["next"]["book"] = "ask.day"
    response = api.client.post("/v1/menus", json=menu, headers=api.admin)
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "steps", "ask.day", "message"] in locs or any(
        loc[:3] == ["body", "steps", "ask.day"] for loc in locs
    ), locs


def test_an_invalid_name_in_the_put_path_is_reported_at_the_path(api: Api) -> None:
    """PUT /v1/menus/{name} takes the name from the path (the body may leave it out), but
    an invalid name is reported with loc ["body", "name"] - a field the request's body does
    not have, so a client cannot point the operator at what to fix.

    Right: the problem is reported at ["path", "name"].
    """
    menu: dict[str, Any] = visit_menu()
    del menu["name"]
    response = api.client.put("/v1/menus/Main%20Menu", json=menu, headers=api.admin)
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["path", "name"] in locs, locs
