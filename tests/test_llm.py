"""The LLM clients against fake providers over real HTTP, with the real SDKs in between.

The SDKs build the requests and parse the errors here, so these tests also pin down the SDK
behaviour Nudge relies on: its own retries are off (one ``generate()`` = one request) and
its error objects carry enough to tell "retry later" from "never retry".

Behaviour both providers must share is tested once for each of them (``provider``); where
they answer in their own words (finish reasons, status codes, error texts) the test's
parameters spell out each one's. Provider-specific behaviour has tests of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import pytest

from integrations.errors import NotFound, ProviderError, Rejected, RetryLater
from integrations.llm import (
    GeminiGenerator,
    Generated,
    OpenAIGenerator,
    TextGenerator,
)
from settings import GeminiSettings, LLMSettings, OpenAISettings, Settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai_compat import FakeOpenAI
from tests.fakes.server import free_port, serve
from worker import build_generator

PROMPT = "Write a short, friendly follow-up to Sam about the ficus they asked about."


# -- the two providers -----------------------------------------------------------------------

Where = Literal["header", "body", "both"]
"""Where a 429 states how long to wait: the ``Retry-After`` header, Google's ``RetryInfo``
detail in the body, or both."""


class ServedGemini:
    """``GeminiGenerator`` against the fake Gemini API (``tests/fakes/gemini.py``)."""

    name = "gemini"
    key = "good-key"
    model = "gemini-2.5-flash"
    retired_model = "gemini-1.5-flash-latest"
    """A model id the fake answers 404 for, as Google does for the retired 1.5 family."""

    def __init__(self, fake: FakeGemini, url: str) -> None:
        self.fake = fake
        self.url = url

    def generator(
        self,
        *,
        key: str | None = None,
        model: str | None = None,
        at: str | None = None,
        timeout: float = 30.0,
    ) -> GeminiGenerator:
        """A generator pointed at the fake (or at ``at``), with the good key by default."""
        return GeminiGenerator(
            key or self.key, model or self.model, base_url=at or self.url, timeout=timeout
        )

    def generator_adding_nothing(self) -> GeminiGenerator:
        """One that sends no option of its own: thinking left to the model (2.5 Pro cannot
        turn it off), where the default generator turns it off."""
        return GeminiGenerator(self.key, "gemini-2.5-pro", base_url=self.url, thinking_budget=None)

    def models_asked(self) -> list[str]:
        return self.fake.models

    def turns_sent(self, index: int = 0) -> Any:
        return self.fake.requests[index]["contents"]

    def options_sent(self) -> dict[str, Any]:
        """The last request's ``generationConfig``."""
        return self.fake.generation_config()

    def ask_to_wait(self, seconds: float, where: Where) -> None:
        """Answer the next request 429, asking for ``seconds`` of patience in ``where``."""
        self.fake.fail_next(429, retry_after=seconds, retry_after_in=where)

    @staticmethod
    def reason(error: ProviderError) -> str:
        """Where the provider's own word for a failure shows: Gemini's SDK puts it in the
        message."""
        return str(error)


class ServedOpenAI:
    """``OpenAIGenerator`` against the fake OpenAI-compatible API
    (``tests/fakes/openai_compat.py``)."""

    name = "openai"
    key = "sk-good"
    model = "gpt-4o-mini"
    retired_model = "gpt-3.5-turbo-0301"
    """A model id the fake does not know (it knows only ``model``)."""

    def __init__(self, fake: FakeOpenAI, url: str) -> None:
        self.fake = fake
        self.url = url

    def generator(
        self,
        *,
        key: str | None = None,
        model: str | None = None,
        at: str | None = None,
        timeout: float = 30.0,
    ) -> OpenAIGenerator:
        """A generator pointed at the fake (or at ``at``), with the good key by default."""
        return OpenAIGenerator(
            key or self.key, model or self.model, base_url=(at or self.url) + "/v1", timeout=timeout
        )

    def generator_adding_nothing(self) -> OpenAIGenerator:
        """One that sends no option of its own: the default generator already does not."""
        return self.generator()

    def models_asked(self) -> list[str]:
        return [str(request["model"]) for request in self.fake.requests]

    def turns_sent(self, index: int = 0) -> Any:
        return self.fake.requests[index]["messages"]

    def options_sent(self) -> dict[str, Any]:
        """The last request's fields other than the model and the messages."""
        request = self.fake.requests[-1]
        return {key: value for key, value in request.items() if key not in ("model", "messages")}

    def ask_to_wait(self, seconds: float, where: Where) -> None:
        """Answer the next request 429, asking for ``seconds`` of patience (OpenAI states it
        in the ``Retry-After`` header only)."""
        assert where == "header", "OpenAI states the wait in the header only"
        self.fake.fail_next(429, retry_after=seconds)

    @staticmethod
    def reason(error: ProviderError) -> str:
        """Where the provider's own word for a failure shows: OpenAI's error ``code`` is in
        the body only."""
        return error.body


ServedProvider = ServedGemini | ServedOpenAI
"""A fake provider being served, and how to build and read its generator."""


@pytest.fixture
def served_gemini() -> Iterator[ServedGemini]:
    fake = FakeGemini(api_key=ServedGemini.key)
    with serve(fake.app) as server:
        yield ServedGemini(fake, server.url)


@pytest.fixture
def served_openai() -> Iterator[ServedOpenAI]:
    fake = FakeOpenAI(api_key=ServedOpenAI.key, known_models={ServedOpenAI.model})
    with serve(fake.app) as server:
        yield ServedOpenAI(fake, server.url)


@pytest.fixture(params=[ServedGemini.name, ServedOpenAI.name])
def provider_name(request: pytest.FixtureRequest) -> str:
    """Each provider in turn; a test with per-provider expectations parametrizes this name
    itself, next to them."""
    name: str = request.param
    return name


@pytest.fixture
def provider(provider_name: str, request: pytest.FixtureRequest) -> ServedProvider:
    served: ServedProvider = request.getfixturevalue(f"served_{provider_name}")
    return served


@pytest.fixture
async def generator(
    provider: ServedProvider,
) -> AsyncIterator[GeminiGenerator | OpenAIGenerator]:
    made = provider.generator(timeout=5)
    yield made
    await made.aclose()


# -- what both providers do alike ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_name", "finish", "name", "turns"),
    [
        (
            "gemini",
            "STOP",
            "gemini:gemini-2.5-flash",
            [{"role": "user", "parts": [{"text": PROMPT}]}],
        ),
        ("openai", "stop", "openai:gpt-4o-mini", [{"role": "user", "content": PROMPT}]),
    ],
    ids=["gemini", "openai"],
)
async def test_returns_the_text(
    provider: ServedProvider,
    generator: GeminiGenerator | OpenAIGenerator,
    finish: str,
    name: str,
    turns: list[dict[str, Any]],
) -> None:
    provider.fake.reply("Hi Sam! Still thinking about that ficus?")

    result = await generator.generate(PROMPT)

    assert result == Generated(
        text="Hi Sam! Still thinking about that ficus?", finish_reason=finish
    )
    assert generator.name == name
    assert provider.models_asked() == [provider.model]
    assert provider.turns_sent() == turns


@pytest.mark.parametrize(
    ("provider_name", "options"),
    [
        (
            "gemini",
            {"temperature": 0.4, "maxOutputTokens": 250, "thinkingConfig": {"thinkingBudget": 0}},
        ),
        ("openai", {"temperature": 0.4, "max_completion_tokens": 250}),  # not max_tokens
    ],
    ids=["gemini", "openai"],
)
async def test_sends_temperature_and_the_output_limit(
    provider: ServedProvider,
    generator: GeminiGenerator | OpenAIGenerator,
    options: dict[str, Any],
) -> None:
    await generator.generate(PROMPT, temperature=0.4, max_output_tokens=250)

    assert provider.options_sent() == options


async def test_answers_from_the_prompt_when_nothing_is_queued(
    generator: GeminiGenerator | OpenAIGenerator,
) -> None:
    result = await generator.generate(PROMPT)

    assert result.text == "Hi! Following up on our chat."
    assert not result.blocked


async def test_leaves_unset_options_to_the_model(provider: ServedProvider) -> None:
    generator = provider.generator_adding_nothing()
    try:
        await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert provider.options_sent() == {}


@pytest.mark.parametrize(
    ("provider_name", "finish"), [("gemini", "SAFETY"), ("openai", "content_filter")]
)
async def test_a_withheld_answer_is_empty_and_blocked(
    provider: ServedProvider, generator: GeminiGenerator | OpenAIGenerator, finish: str
) -> None:
    """Gemini blocks the prompt itself (no candidate at all); OpenAI's content filter
    withholds the answer."""
    provider.fake.reply_blocked()

    assert await generator.generate(PROMPT) == Generated(
        text="", finish_reason=finish, blocked=True
    )


@pytest.mark.parametrize(
    ("provider_name", "finish"), [("gemini", "MAX_TOKENS"), ("openai", "length")]
)
async def test_an_exhausted_output_limit_gives_empty_text_not_an_error(
    provider: ServedProvider, generator: GeminiGenerator | OpenAIGenerator, finish: str
) -> None:
    """Thinking and reasoning models can spend the whole limit before writing any text."""
    provider.fake.reply_max_tokens()

    result = await generator.generate(PROMPT, max_output_tokens=250)

    assert result == Generated(text="", finish_reason=finish, blocked=False)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_statuses_retry_later_after_exactly_one_request(
    provider: ServedProvider, generator: GeminiGenerator | OpenAIGenerator, status: int
) -> None:
    provider.fake.fail_next(status, times=5)

    with pytest.raises(RetryLater) as caught:
        await generator.generate(PROMPT)

    assert caught.value.status == status
    assert caught.value.provider == provider.name
    assert len(provider.fake.requests) == 1, "the SDK retried on its own"


@pytest.mark.parametrize(
    ("provider_name", "where", "says"),
    [
        ("gemini", "header", "RESOURCE_EXHAUSTED"),
        ("gemini", "body", "RESOURCE_EXHAUSTED"),
        ("gemini", "both", "RESOURCE_EXHAUSTED"),
        ("openai", "header", "rate_limit_exceeded"),
    ],
    ids=["gemini-header", "gemini-body", "gemini-both", "openai-header"],
)
async def test_a_429_carries_the_requested_wait(
    provider: ServedProvider,
    generator: GeminiGenerator | OpenAIGenerator,
    where: Where,
    says: str,
) -> None:
    provider.ask_to_wait(7, where)

    with pytest.raises(RetryLater) as caught:
        await generator.generate(PROMPT)

    assert caught.value.retry_after == 7
    assert says in provider.reason(caught.value)


@pytest.mark.parametrize(
    ("provider_name", "says"),
    [("gemini", "is not found for API version v1beta"), ("openai", "does not exist")],
    ids=["gemini", "openai"],
)
async def test_an_unknown_model_is_not_found(provider: ServedProvider, says: str) -> None:
    generator = provider.generator(model=provider.retired_model)
    try:
        with pytest.raises(NotFound) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert caught.value.status == 404
    assert says in str(caught.value)
    # One request, answered by the fake's model check: not a router 404 for a path the SDK
    # got wrong, nor a retry.
    assert provider.models_asked() == [provider.retired_model]


@pytest.mark.parametrize(
    ("provider_name", "key", "status", "says"),
    [
        ("gemini", "bad-key", 400, "API key not valid"),
        ("openai", "sk-bad-key-1234", 401, "invalid_api_key"),
    ],
    ids=["gemini", "openai"],
)
async def test_a_wrong_key_is_rejected(
    provider: ServedProvider, key: str, status: int, says: str
) -> None:
    generator = provider.generator(key=key)
    try:
        with pytest.raises(Rejected) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == status
    assert says in provider.reason(caught.value)
    assert len(provider.fake.requests) == 1


async def test_a_timeout_is_retry_later(provider: ServedProvider) -> None:
    provider.fake.stall_next(1)
    generator = provider.generator(timeout=0.2)
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert len(provider.fake.requests) == 1


async def test_an_unreachable_server_is_retry_later(provider: ServedProvider) -> None:
    generator = provider.generator(at=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()


# -- Gemini only -----------------------------------------------------------------------------


async def test_gemini_safety_stop_on_the_candidate_is_blocked(
    served_gemini: ServedGemini,
) -> None:
    served_gemini.fake.reply("half a sent", finish_reason="SAFETY")
    gemini = served_gemini.generator(timeout=5)
    try:
        assert await gemini.generate(PROMPT) == Generated(
            text="", finish_reason="SAFETY", blocked=True
        )
    finally:
        await gemini.aclose()


async def test_gemini_3_models_get_a_thinking_level_not_a_budget(
    served_gemini: ServedGemini,
) -> None:
    fake = served_gemini.fake
    generator = GeminiGenerator("good-key", "gemini-3.5-flash", base_url=served_gemini.url)
    try:
        await generator.generate(PROMPT, max_output_tokens=250)
    finally:
        await generator.aclose()
    config = fake.generation_config()
    assert config["maxOutputTokens"] == 250
    assert config["thinkingConfig"] == {"thinkingLevel": "MINIMAL"}, "both at once is a 400"


# -- choosing the provider -------------------------------------------------------------------


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """GeminiSettings reads these at construction; a developer's shell must not leak in."""
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[arg-type]


async def _close(generator: TextGenerator | None) -> None:
    if isinstance(generator, GeminiGenerator | OpenAIGenerator):
        await generator.aclose()


@pytest.mark.usefixtures("no_provider_env")
async def test_no_key_means_no_generator() -> None:
    assert build_generator(settings()) is None


@pytest.mark.usefixtures("no_provider_env")
async def test_auto_prefers_gemini_and_wires_its_settings(served_gemini: ServedGemini) -> None:
    fake = served_gemini.fake
    generator = build_generator(
        settings(
            gemini=GeminiSettings(
                api_key="good-key", base_url=served_gemini.url, model="gemini-2.5-flash-lite"
            ),
            openai=OpenAISettings(api_key="sk-good"),
        )
    )
    try:
        assert isinstance(generator, GeminiGenerator)
        assert generator.name == "gemini:gemini-2.5-flash-lite"
        assert (await generator.generate(PROMPT)).text
    finally:
        await _close(generator)

    assert fake.models == ["gemini-2.5-flash-lite"]
    assert fake.generation_config() == {"thinkingConfig": {"thinkingBudget": 0}}


@pytest.mark.usefixtures("no_provider_env")
async def test_auto_falls_back_to_openai_and_wires_its_settings(
    served_openai: ServedOpenAI,
) -> None:
    fake = served_openai.fake
    generator = build_generator(
        settings(openai=OpenAISettings(api_key="sk-good", base_url=served_openai.url + "/v1"))
    )
    try:
        assert isinstance(generator, OpenAIGenerator)
        assert generator.name == "openai:gpt-4o-mini"
        assert (await generator.generate(PROMPT)).text
    finally:
        await _close(generator)

    assert len(fake.requests) == 1


@pytest.mark.usefixtures("no_provider_env")
async def test_an_explicit_provider_wins_over_auto() -> None:
    both = {
        "gemini": GeminiSettings(api_key="g"),
        "openai": OpenAISettings(api_key="sk-o"),
    }
    chosen = build_generator(settings(llm=LLMSettings(provider="openai"), **both))
    try:
        assert isinstance(chosen, OpenAIGenerator)
    finally:
        await _close(chosen)
    assert build_generator(settings(llm=LLMSettings(provider="none"), **both)) is None


@pytest.mark.usefixtures("no_provider_env")
@pytest.mark.parametrize("provider", ["gemini", "openai"])
async def test_an_explicit_provider_without_a_key_says_which_setting_is_missing(
    provider: Literal["gemini", "openai"],
) -> None:
    with pytest.raises(ValueError, match="no key is set"):
        build_generator(settings(llm=LLMSettings(provider=provider)))
