"""An automation rule's ``conditions``: which contacts and events the rule is for.

Written as the original Django system wrote them, a JSON object of ``key: value``
(``{"lead_status": "new", "source": "Website"}``), so rules move over unchanged; every key must
hold for the rule to run. Keys name a contact's facts (``status`` and its original spelling
``lead_status``, ``source``, ``tags``, ``fields.<name>``) or the event's data
(``event.<name>``, dotted into nested objects). A value matches by equality, a list means any of
them, and an object holds one operator: ``{"not": v}`` (or a list: none of them),
``{"in": [...]}``, ``{"exists": true}``. For ``tags`` a value means "has this tag".

Values compare as text without regard to case or surrounding spaces (``30`` matches ``"30"``,
``"Website"`` matches ``"website"``): operators type them by hand, and a rule that silently never
runs because of a capital letter is worse than one that is a little generous.

A condition the rule cannot use is refused when the rule is saved, naming its key, rather than
being found false at run time: a typo in a key would otherwise stop a rule without a word.
"""

# No ``from __future__ import annotations``: ``ContactFacts`` and ``Conditions`` cross the
# workflow boundary and pydantic resolves their annotations inside the workflow sandbox.

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from domain import limits

Scalar = str | int | float | bool
KEYS_HINT = "use status, lead_status, source, tags, fields.<name> or event.<name>"
OPERATORS = ("not", "in", "exists")


class ConditionError(ValueError):
    """A condition the rule cannot use; ``key`` is the condition's key as written (``None``:
    the conditions as a whole), so the API can point at it."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        where = "conditions" if key is None else f"conditions.{key}"
        super().__init__(f"{where}: {problem}")


class Subject(StrEnum):
    """What a condition looks at."""

    status = "status"
    source = "source"
    tags = "tags"
    field = "field"  # fields.<name>
    event = "event"  # event.<path>


class Operator(StrEnum):
    any_of = "any_of"  # a value, a list, or {"in": [...]}
    none_of = "none_of"  # {"not": ...}
    exists = "exists"


@dataclass(frozen=True)
class Condition:
    key: str
    """As written (``lead_status``, ``fields.plan``): the reason a rule did not run quotes it."""
    subject: Subject
    name: str
    """The field's name or the event's path (empty for status, source and tags)."""
    operator: Operator
    values: tuple[Scalar, ...] = ()
    exists: bool = True


@dataclass(frozen=True)
class Conditions:
    clauses: tuple[Condition, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """As written, for storing and showing back."""


class ContactFacts(BaseModel):
    """What conditions may read of a contact, gathered by whoever runs the rule."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    source: str | None = None
    tags: frozenset[str] = frozenset()
    fields: dict[str, Any] = {}


_SUBJECTS = {
    "status": Subject.status,
    "lead_status": Subject.status,  # the original's name for it
    "source": Subject.source,
    "tags": Subject.tags,
}
_PREFIXES = {"fields.": Subject.field, "event.": Subject.event}


def parse_conditions(raw: Any) -> Conditions:
    """``raw`` as written in a rule (``null`` is none); a ``ConditionError`` naming the first
    key that cannot be used."""
    if isinstance(raw, Conditions):
        return raw
    if raw is None:
        return Conditions()
    if not isinstance(raw, Mapping):
        raise ConditionError(None, f"must be an object of key: value, not {_kind(raw)}")
    if len(raw) > limits.MAX_CONDITIONS:
        raise ConditionError(None, f"{len(raw)} conditions; at most {limits.MAX_CONDITIONS}")
    clauses = tuple(_condition(str(key), value) for key, value in raw.items())
    return Conditions(clauses, dict(raw))


def _condition(key: str, value: Any) -> Condition:
    subject, name = _subject(key)
    if isinstance(value, Mapping):
        return _operator(key, subject, name, value)
    if isinstance(value, list):
        return Condition(key, subject, name, Operator.any_of, _values(key, value))
    return Condition(key, subject, name, Operator.any_of, (_scalar(key, value),))


def _subject(key: str) -> tuple[Subject, str]:
    if len(key) > limits.CONDITION_KEY:
        raise ConditionError(key[:40] + "…", f"the key is longer than {limits.CONDITION_KEY}")
    if key in _SUBJECTS:
        return _SUBJECTS[key], ""
    for prefix, subject in _PREFIXES.items():
        if key.startswith(prefix):
            name = key.removeprefix(prefix)
            if not name.strip() or (subject is Subject.event and "" in name.split(".")):
                raise ConditionError(key, f"name the {prefix[:-1]} value after {prefix!r}")
            return subject, name
    near = difflib.get_close_matches(key, [*_SUBJECTS, "fields.", "event."], n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    raise ConditionError(key, f"not a contact field or event value; {hint}{KEYS_HINT}")


def _operator(key: str, subject: Subject, name: str, value: Mapping[Any, Any]) -> Condition:
    written = list(value)
    if len(written) != 1 or written[0] not in OPERATORS:
        unknown = [str(k) for k in written if k not in OPERATORS]
        if unknown:
            problem = f"{unknown[0]!r} is not an operator"
        elif written:
            problem = "one operator per condition, not " + " and ".join(map(str, written))
        else:
            problem = "an empty object says nothing"
        raise ConditionError(key, f"{problem}; write a value, a list, {_OPERATOR_SHAPES}")
    operator, operand = written[0], value[written[0]]
    if operator == "exists":
        if not isinstance(operand, bool):
            raise ConditionError(key, f'"exists" takes true or false, not {_kind(operand)}')
        return Condition(key, subject, name, Operator.exists, exists=operand)
    if operator == "in":
        if not isinstance(operand, list):
            raise ConditionError(key, f'"in" takes a list, not {_kind(operand)}')
        return Condition(key, subject, name, Operator.any_of, _values(key, operand))
    values = _values(key, operand) if isinstance(operand, list) else (_scalar(key, operand),)
    return Condition(key, subject, name, Operator.none_of, values)


_OPERATOR_SHAPES = '{"not": value}, {"in": [values]} or {"exists": true}'


def _values(key: str, values: list[Any]) -> tuple[Scalar, ...]:
    if not values:
        raise ConditionError(key, "an empty list matches nothing; give at least one value")
    if len(values) > limits.MAX_CONDITION_VALUES:
        raise ConditionError(
            key, f"{len(values)} values; at most {limits.MAX_CONDITION_VALUES} in a list"
        )
    return tuple(_scalar(key, value) for value in values)


def _scalar(key: str, value: Any) -> Scalar:
    if isinstance(value, str):
        if len(value) > limits.CONDITION_VALUE:
            raise ConditionError(
                key, f"a value of {len(value)} characters; at most {limits.CONDITION_VALUE}"
            )
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ConditionError(key, "a number must be finite")
    if isinstance(value, bool | int | float):
        return value
    if value is None:
        raise ConditionError(key, 'null matches nothing; to want it unset write {"exists": false}')
    raise ConditionError(
        key, f"{_kind(value)} is not a value here; write text, a number, true or false"
    )


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "text", bool: "true/false"}
    for python, words in kinds.items():
        if isinstance(value, python):
            return words
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else type(value).__name__


# --- judging -------------------------------------------------------------------------------


def matches(conditions: Conditions, contact: ContactFacts, event: Mapping[str, Any]) -> bool:
    return why_not(conditions, contact, event) is None


def why_not(conditions: Conditions, contact: ContactFacts, event: Mapping[str, Any]) -> str | None:
    """The first condition that does not hold, in words for the runs listing
    (``status is "won", the rule wants "new" or "contacted"``); ``None`` when all hold."""
    for condition in conditions.clauses:
        actual = _actual(condition, contact, event)
        if not _holds(condition, _texts(actual)):
            return _sentence(condition, actual)
    return None


def _actual(condition: Condition, contact: ContactFacts, event: Mapping[str, Any]) -> Any:
    match condition.subject:
        case Subject.status:
            return contact.status
        case Subject.source:
            return contact.source
        case Subject.tags:
            return sorted(contact.tags)
        case Subject.field:
            return contact.fields.get(condition.name)
        case Subject.event:
            return _lookup(event, condition.name)


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    if path in data:  # a key that itself has dots
        return data[path]
    found: Any = data
    for part in path.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


def _texts(actual: Any) -> frozenset[str] | None:
    """The values a subject has, compared as text; ``None`` when it is unset (absent, null,
    blank, an empty list). An object is set but equals nothing."""
    items = actual if isinstance(actual, list | tuple | set | frozenset) else [actual]
    texts = frozenset(_text(item) for item in items if _is_scalar(item))
    texts = texts - {""}
    if texts:
        return texts
    if isinstance(actual, Mapping) and actual:
        return frozenset()
    return None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().casefold()


def _holds(condition: Condition, texts: frozenset[str] | None) -> bool:
    if condition.operator is Operator.exists:
        return (texts is not None) == condition.exists
    wanted = {_text(value) for value in condition.values}
    found = bool(texts and texts & wanted)
    return found if condition.operator is Operator.any_of else not found


def _sentence(condition: Condition, actual: Any) -> str:
    is_tags = condition.subject is Subject.tags
    if is_tags:
        now = f"tags are {_listed(actual, 'and')}" if actual else "there are no tags"
    elif _texts(actual) is None:
        now = f"{condition.key} is not set"
    else:
        now = f"{condition.key} is {_shown(actual)}"
    if condition.operator is Operator.exists:
        if is_tags:
            wants = "at least one" if condition.exists else "none"
        else:
            wants = "it set" if condition.exists else "it not set"
    elif not is_tags:
        lead = "" if condition.operator is Operator.any_of else "anything but "
        wants = lead + _listed(condition.values, "or")
    elif len(condition.values) == 1:
        lead = "the tag " if condition.operator is Operator.any_of else "no tag "
        wants = lead + _shown(condition.values[0])
    else:
        lead = "one of" if condition.operator is Operator.any_of else "none of"
        wants = f"{lead} the tags {_listed(condition.values, 'or')}"
    return f"{now}, the rule wants {wants}"


def _listed(values: Any, last: str) -> str:
    shown = [_shown(value) for value in values]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + f" {last} {shown[-1]}"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


# --- as a field of a pydantic model --------------------------------------------------------


def _validated(raw: Any) -> Conditions:
    """``parse_conditions`` for pydantic: the error's location is the key, so the API's 422
    points at ``body.conditions.lead_stat``."""
    try:
        return parse_conditions(raw)
    except ConditionError as exc:
        loc = () if exc.key is None else (exc.key,)
        error = PydanticCustomError("value_error", str(exc))
        details = InitErrorDetails(type=error, loc=loc, input=raw)
        raise ValidationError.from_exception_data("conditions", [details]) from None


ConditionsField = Annotated[
    Conditions,
    PlainValidator(_validated),
    PlainSerializer(lambda conditions: dict(conditions.raw), return_type=dict[str, Any]),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": True,
            "description": (
                "Every key must hold. Keys: status (or lead_status), source, tags, "
                "fields.<name>, event.<name>. A value matches by equality, a list means any "
                'of them; or {"not": v}, {"in": [...]}, {"exists": true}.'
            ),
        }
    ),
]
"""``Conditions`` in a rule: validated from the JSON object, written back as it was given."""
