"""A NUL character anywhere in a request is a 422 naming its place, never a database error.

PostgreSQL refuses NUL in text; before this guard, one ``\\u0000`` in a reason or a query
parameter was a 500. Run on both databases through the API rig (``tests/api_rig.py``).
"""

from __future__ import annotations

from tests.api_rig import Api


def test_a_nul_in_a_json_field_is_a_422_at_that_field(api: Api) -> None:
    body = {"channel": "sms", "address": "+15550001111", "reason": "stop\u0000now"}
    answer = api.client.post("/v1/suppressions", json=body, headers=api.admin)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "reason"] and "NUL" in error["msg"]
    assert api.client.get("/v1/suppressions", headers=api.admin).json() == []


def test_a_nul_deep_in_a_body_is_named_by_its_path(api: Api) -> None:
    body = {"channels": {"email": "a\u0000@example.com"}}
    answer = api.client.put("/v1/contacts/1", json=body, headers=api.admin)
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "channels", "email"]]


def test_a_nul_in_a_query_parameter_is_a_422_naming_it(api: Api) -> None:
    answer = api.client.get("/v1/outbox?workflow_id=a%00b", headers=api.user)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "workflow_id"]


def test_a_nul_in_a_webhook_form_is_refused_before_the_signature_is_read(api: Api) -> None:
    form = {"From": "+15550001111", "To": "+15550002222", "Body": "hi\x00", "MessageSid": "SM1"}
    answer = api.client.post("/webhooks/twilio/inbound", data=form)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "Body"]


def test_text_without_nul_is_untouched(api: Api) -> None:
    body = {"channel": "sms", "address": "+15550001111", "reason": 'a \\u0000 typed "literally"'}
    answer = api.client.post("/v1/suppressions", json=body, headers=api.admin)
    assert answer.status_code == 201, answer.text
    [row] = api.client.get("/v1/suppressions", headers=api.admin).json()
    assert row["reason"] == 'a \\u0000 typed "literally"'
