"""Message templates: the one renderer (both placeholder styles, the locale fallback chain,
loud failures instead of raw placeholders), the save-time checks, and ``/v1/templates`` over
real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest

from domain import whatsapp
from domain.channels import ChannelName, Template
from domain.templates import (
    MessageTemplate,
    MissingVariables,
    RenderedTooLong,
    approved_template,
    choose_locale,
    problems,
    render,
)
from domain.text import MENU, TEMPLATE, fill, placeholders
from tests.api_rig import Api

HX = "HX" + "0" * 32


def template(**fields: Any) -> MessageTemplate:
    return MessageTemplate.model_validate(
        {
            "name": "order_update",
            "channel": "whatsapp",
            "variants": {"en": "Hi {{lead_name}}, order {order_id} is on its way."},
            "variables": ["lead_name", "order_id"],
            **fields,
        }
    )


def locs(found: list[Any]) -> list[tuple[str | int, ...]]:
    return [problem.loc for problem in found]


# -- the renderer ---------------------------------------------------------------------------


def test_double_and_declared_single_braces_are_both_placeholders() -> None:
    rendered = render(template(), "en", {"lead_name": "Anna", "order_id": "A-17"})
    assert rendered.text == "Hi Anna, order A-17 is on its way."
    assert rendered.locale_used == "en"
    assert rendered.subject is None


def test_spaces_inside_double_braces_are_allowed() -> None:
    t = template(variants={"en": "Hi {{ lead_name }} ({{order_id}})"})
    assert render(t, None, {"lead_name": "Anna", "order_id": "7"}).text == "Hi Anna (7)"


def test_an_undeclared_single_brace_name_and_json_braces_are_left_as_written() -> None:
    text = 'Hi {lead_name}, {note} stays; payload {"id": {order_id}, "x": {"y": 1}}'
    t = template(variants={"en": text})
    assert problems(t) == []
    assert render(t, "en", {"lead_name": "Anna", "order_id": "7", "note": "no"}).text == (
        'Hi Anna, {note} stays; payload {"id": 7, "x": {"y": 1}}'
    )


def test_quadrupled_braces_are_literal_double_braces() -> None:
    t = template(variants={"en": "{{{{lead_name}}}} is written {{lead_name}}, {order_id}"})
    assert render(t, "en", {"lead_name": "Anna", "order_id": "7"}).text == (
        "{{lead_name}} is written Anna, 7"
    )


def test_values_are_put_in_as_they_are() -> None:
    """One pass: braces inside a value are not read as placeholders or escapes."""
    values = {"lead_name": "{{order_id}}", "order_id": "{{{{x}}}}"}
    assert render(template(), "en", values).text == (
        "Hi {{order_id}}, order {{{{x}}}} is on its way."
    )


def test_the_locale_chain_exact_then_language_then_default() -> None:
    t = template(
        variants={
            "en": "Hi {{lead_name}} {{order_id}}",
            "pt": "Olá {{lead_name}} {{order_id}}",
            "pt-BR": "Oi {{lead_name}} {{order_id}}",
            "ta": "வணக்கம் {{lead_name}} {{order_id}}",
        }
    )
    assert choose_locale(t, "pt-BR") == "pt-BR"
    assert choose_locale(t, "pt_br") == "pt-BR", "WhatsApp's spelling, any case"
    assert choose_locale(t, "pt-PT") == "pt"
    assert choose_locale(t, "ta-IN") == "ta"
    assert choose_locale(t, "fr") == "en"
    assert choose_locale(t, None) == "en"
    values = {"lead_name": "Kumar", "order_id": "9"}
    assert render(t, "ta", values).text == "வணக்கம் Kumar 9"
    assert render(t, "de", values).locale_used == "en"


def test_the_default_locale_is_en_or_the_first_variant_or_as_given() -> None:
    assert template(variants={"ta": "{{lead_name}} {{order_id}}", "en": "x"}).default_locale == "en"
    only_ta = template(variants={"ta": "{{lead_name}}", "fr": "{{order_id}}"})
    assert only_ta.default_locale == "ta"
    assert choose_locale(only_ta, "de") == "ta"
    given = template(variants={"en": "{{lead_name}}", "ta": "{{order_id}}"}, default_locale="ta")
    assert choose_locale(given, "de") == "ta"


def test_a_missing_variable_names_each_one() -> None:
    with pytest.raises(MissingVariables) as raised:
        render(template(), "en", {})
    assert raised.value.names == ["lead_name", "order_id"]
    assert "lead_name" in str(raised.value) and "order_id" in str(raised.value)


def test_an_email_subject_is_rendered_on_one_line() -> None:
    t = template(
        channel="email",
        subject="Your order {{order_id}}",
        variants={"en": "Dear {{lead_name}}"},
    )
    rendered = render(t, "en", {"lead_name": "Anna", "order_id": "7\r\nBcc: x@example.com"})
    assert rendered.subject == "Your order 7 Bcc: x@example.com"
    with pytest.raises(MissingVariables) as raised:
        render(t, "en", {"lead_name": "Anna"})
    assert raised.value.names == ["order_id"]


def test_never_a_raw_placeholder_in_what_is_rendered() -> None:
    texts = [
        "{{lead_name}}{order_id}",
        "{ {lead_name} }} {{{order_id}}}",
        "{{{{x}}}} {{ lead_name }}{{order_id}}{",
    ]
    raw = re.compile(r"\{\{ *(lead_name|order_id) *\}\}|\{(lead_name|order_id)\}")
    for text in texts:
        t = template(variants={"en": text})
        out = render(t, "en", {"lead_name": "A", "order_id": "B"}).text
        assert not raw.search(out), (text, out)
        with pytest.raises(MissingVariables):
            render(t, "en", {"lead_name": "A"})


def test_a_whatsapp_text_too_long_once_filled_in_is_refused() -> None:
    t = template(variants={"en": "{{lead_name}} {{order_id}}"})
    with pytest.raises(RenderedTooLong):
        render(t, "en", {"lead_name": "x" * whatsapp.TEXT, "order_id": "1"})


def test_the_approved_template_is_filled_in_for_meta_and_twilio() -> None:
    t = template(
        approved={
            "whatsapp": {"name": "order_update", "language": "en_US", "parameters": ["lead_name"]},
            "whatsapp_twilio": {"content_sid": HX, "parameters": ["lead_name", "order_id"]},
        }
    )
    assert problems(t) == []
    values = {"lead_name": "Anna", "order_id": "7"}
    assert approved_template(t, ChannelName.whatsapp, values) == Template(
        name="order_update",
        language="en_US",
        components=[{"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}],
    )
    assert approved_template(t, ChannelName.whatsapp_twilio, values) == Template(
        content_sid=HX, variables={"1": "Anna", "2": "7"}
    )
    assert approved_template(template(), ChannelName.whatsapp, values) is None
    with pytest.raises(MissingVariables):
        approved_template(t, ChannelName.whatsapp, {})


def test_menus_and_templates_fill_the_same_text_alike() -> None:
    """Menus' ``fill`` and the template renderer are one scanner (``domain.text.pieces``):
    a menu text of ``{name}`` placeholders renders the same as a template declaring them,
    JSON-ish braces left alone by both."""
    text = 'Thanks {name}, a table for {people} on {day}. Ref {"r": 1, "s": [1]} {a-b}'
    answers = {"name": "Anna", "people": "4", "day": "Friday"}
    as_template = template(variants={"en": text}, variables=list(answers))
    assert problems(as_template) == []
    expected = 'Thanks Anna, a table for 4 on Friday. Ref {"r": 1, "s": [1]} {a-b}'
    assert fill(text, answers) == render(as_template, "en", answers).text == expected
    assert placeholders(text, MENU) == placeholders(text, TEMPLATE, set(answers)) == list(answers)


# -- save-time checks -----------------------------------------------------------------------


def test_a_sound_template_has_no_problems() -> None:
    assert problems(template()) == []


def test_an_undeclared_double_brace_placeholder_is_named_with_its_variant() -> None:
    t = template(variants={"en": "Hi {{lead_name}} {order_id}", "ta": "{{lead_name}} {{total}}"})
    found = problems(t)
    assert locs(found) == [("variants", "ta")]
    assert "{{total}}" in found[0].message and "variables" in found[0].message


def test_a_declared_variable_nothing_uses_is_refused() -> None:
    """``{lead_nme}``: a typo that would otherwise go out as written."""
    t = template(variants={"en": "Hi {lead_nme}, order {order_id}"})
    found = problems(t)
    assert locs(found) == [("variables", 0)]
    assert "lead_name" in found[0].message


def test_variables_used_only_by_the_approved_template_count_as_used() -> None:
    t = template(
        variants={"en": "Order {{order_id}}"},
        approved={"whatsapp": {"name": "hello", "parameters": ["lead_name"]}},
    )
    assert problems(t) == []


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"variants": {}}, ("variants",)),
        ({"variants": {"en": "   ", "ta": "{{lead_name}} {{order_id}}"}}, ("variants", "en")),
        ({"variants": {"en": "x" * (whatsapp.TEXT + 1) + "{{lead_name}}{{order_id}}"}}, None),
        ({"variants": {"e n": "{{lead_name}} {{order_id}}"}}, ("variants", "e n")),
        ({"variants": {"en": "{{lead_name}} {{order_id}} {{1}}"}}, ("variants", "en")),
        ({"default_locale": "ta"}, ("default_locale",)),
        ({"variables": ["lead_name", "order_id", "lead_name"]}, ("variables", 2)),
        ({"variables": ["lead_name", "order_id", "9x"]}, ("variables", 2)),
        ({"name": "Order Update"}, ("name",)),
        ({"subject": "Hi"}, ("subject",)),
        ({"channel": "email"}, ("subject",)),
        ({"approved": {"whatsapp": {"name": "Bad Name"}}}, ("approved", "whatsapp", "name")),
        (
            {"approved": {"whatsapp_twilio": {"content_sid": "HX1"}}},
            ("approved", "whatsapp_twilio", "content_sid"),
        ),
        (
            {"approved": {"whatsapp": {"name": "ok", "parameters": ["total"]}}},
            ("approved", "whatsapp", "parameters", 0),
        ),
        ({"channel": "sms", "approved": {"whatsapp": {"name": "ok"}}}, ("approved",)),
    ],
)
def test_each_problem_is_named_where_it_is(
    fields: dict[str, Any], loc: tuple[str | int, ...] | None
) -> None:
    found = locs(problems(template(**fields)))
    assert found, fields
    assert loc is None or loc in found, found


# -- the API --------------------------------------------------------------------------------

ORDER_UPDATE: dict[str, Any] = {
    "name": "order_update",
    "channel": "whatsapp",
    "variants": {
        "en": "Hi {lead_name}, order {{order_id}} is on its way.",
        "ta": "வணக்கம் {lead_name}, ஆர்டர் {{order_id}} வருகிறது.",
    },
    "variables": ["lead_name", "order_id"],
    "approved": {
        "whatsapp": {"name": "order_update", "language": "en_US", "parameters": ["lead_name"]}
    },
}


def test_create_read_replace_delete(api: Api) -> None:
    c, admin = api.client, api.admin
    created = c.post("/v1/templates", json=ORDER_UPDATE, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["default_locale"] == "en" and body["subject"] is None
    assert body["approved"]["whatsapp"]["parameters"] == ["lead_name"]
    assert body["created_at"] and body["updated_at"]

    got = c.get("/v1/templates/order_update", headers=api.user)
    assert got.status_code == 200 and got.json()["variants"] == ORDER_UPDATE["variants"]
    assert [t["name"] for t in c.get("/v1/templates", headers=api.user).json()] == ["order_update"]

    changed = {**ORDER_UPDATE, "variants": {"en": "Order {{order_id}} for {{lead_name}}"}}
    replaced = c.put("/v1/templates/order_update", json=changed, headers=admin)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["variants"] == changed["variants"]
    stored = api.store.get_template("order_update")
    assert stored is not None and stored.template.variants == changed["variants"]

    new = {k: v for k, v in changed.items() if k != "name"}
    assert c.put("/v1/templates/second", json=new, headers=admin).status_code == 201
    names = [t["name"] for t in c.get("/v1/templates", headers=admin).json()]
    assert names == ["order_update", "second"]

    assert c.delete("/v1/templates/order_update", headers=admin).status_code == 204
    assert c.get("/v1/templates/order_update", headers=admin).status_code == 404
    assert c.delete("/v1/templates/order_update", headers=admin).status_code == 404


def test_a_duplicate_name_is_409(api: Api) -> None:
    assert api.client.post("/v1/templates", json=ORDER_UPDATE, headers=api.admin).status_code == 201
    again = api.client.post("/v1/templates", json=ORDER_UPDATE, headers=api.admin)
    assert again.status_code == 409
    assert "order_update" in again.json()["detail"]


def test_writing_needs_an_admin_token(api: Api) -> None:
    assert api.client.post("/v1/templates", json=ORDER_UPDATE, headers=api.user).status_code == 403


def _errors(response: Any) -> list[tuple[list[Any], str]]:
    assert response.status_code == 422, response.text
    return [(error["loc"], error["msg"]) for error in response.json()["detail"]]


def test_undeclared_and_unused_variables_are_422s_naming_the_variant_and_field(api: Api) -> None:
    bad = {
        **ORDER_UPDATE,
        "variants": {"en": "Hi {{lead_name}}", "ta": "{{lead_name}} {{total}}"},
        "approved": {},
    }
    errors = _errors(api.client.post("/v1/templates", json=bad, headers=api.admin))
    assert [loc for loc, _ in errors] == [["body", "variables", 1], ["body", "variants", "ta"]]
    assert "order_id" in errors[0][1] and "total" in errors[1][1]
    assert api.store.get_template("order_update") is None


def test_shape_errors_and_bad_names_are_422s(api: Api) -> None:
    c, admin = api.client, api.admin
    no_channel = {k: v for k, v in ORDER_UPDATE.items() if k != "channel"}
    assert ["body", "channel"] in [
        loc for loc, _ in _errors(c.post("/v1/templates", json=no_channel, headers=admin))
    ]
    long_locale = {**ORDER_UPDATE, "variants": {"x" * 21: "{{lead_name}}{{order_id}}"}}
    assert _errors(c.post("/v1/templates", json=long_locale, headers=admin))
    email = {**ORDER_UPDATE, "channel": "email", "approved": {}}
    assert [["body", "subject"]] == [
        loc for loc, _ in _errors(c.post("/v1/templates", json=email, headers=admin))
    ]
    bad_path = c.put("/v1/templates/Bad%20Name", json=ORDER_UPDATE, headers=admin)
    assert ["path", "name"] in [loc for loc, _ in _errors(bad_path)]
    other = c.put("/v1/templates/other", json=ORDER_UPDATE, headers=admin)
    assert [["body", "name"]] == [loc for loc, _ in _errors(other)]


def test_render_picks_the_locale_and_names_missing_values(api: Api) -> None:
    c = api.client
    assert c.post("/v1/templates", json=ORDER_UPDATE, headers=api.admin).status_code == 201
    values = {"lead_name": "Kumar", "order_id": "A-17"}
    ta = c.post(
        "/v1/templates/order_update/render",
        json={"locale": "ta-IN", "values": values},
        headers=api.user,
    )
    assert ta.status_code == 200, ta.text
    assert ta.json() == {
        "subject": None,
        "text": "வணக்கம் Kumar, ஆர்டர் A-17 வருகிறது.",
        "locale_used": "ta",
    }
    fallback = c.post(
        "/v1/templates/order_update/render", json={"values": values}, headers=api.user
    )
    assert fallback.json()["locale_used"] == "en"
    missing = c.post(
        "/v1/templates/order_update/render",
        json={"locale": "en", "values": {"lead_name": "Kumar"}},
        headers=api.user,
    )
    assert [loc for loc, _ in _errors(missing)] == [["body", "values", "order_id"]]
    gone = c.post("/v1/templates/nothing/render", json={}, headers=api.user)
    assert gone.status_code == 404
