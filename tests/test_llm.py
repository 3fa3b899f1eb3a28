"""The LLM clients against fake providers over real HTTP, with the real SDKs in between.

The SDKs build the requests and parse the errors here, so these tests also pin down the SDK
behaviour Nudge relies on: its own retries are off (one ``generate()`` = one request) and
its error objects carry enough to tell "retry later" from "never retry".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Literal

import pytest

from integrations.errors import NotFound, Rejected, RetryLater
from integrations.llm import (
    GeminiGenerator,
    Generated,
    OpenAIGenerator,
    TextGenerator,
)
from settings import GeminiSettings, LLMSettings, OpenAISettings, Settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai_compat import FakeOpenAI
from tests.fakes.server import RunningServer, free_port, serve
from worker import build_generator

PROMPT = "Write a short, friendly follow-up to Sam about the ficus they asked about."


# -- Gemini ----------------------------------------------------------------------------------


@pytest.fixture
def gemini_server() -> Iterator[tuple[FakeGemini, RunningServer]]:
    fake = FakeGemini(api_key="good-key")
    with serve(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake_gemini(gemini_server: tuple[FakeGemini, RunningServer]) -> FakeGemini:
    return gemini_server[0]


@pytest.fixture
async def gemini(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> AsyncIterator[GeminiGenerator]:
    generator = GeminiGenerator(
        "good-key", "gemini-2.5-flash", base_url=gemini_server[1].url, timeout=5
    )
    yield generator
    await generator.aclose()


async def test_gemini_returns_the_text(gemini: GeminiGenerator, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply("Hi Sam! Still thinking about that ficus?")

    result = await gemini.generate(PROMPT)

    assert result == Generated(
        text="Hi Sam! Still thinking about that ficus?", finish_reason="STOP"
    )
    assert gemini.name == "gemini:gemini-2.5-flash"
    assert fake_gemini.models == ["gemini-2.5-flash"]
    assert fake_gemini.requests[0]["contents"] == [{"role": "user", "parts": [{"text": PROMPT}]}]


async def test_gemini_answers_from_the_prompt_when_nothing_is_queued(
    gemini: GeminiGenerator,
) -> None:
    result = await gemini.generate(PROMPT)

    assert result.text == "Hi! Following up on our chat."
    assert not result.blocked


async def test_gemini_sends_temperature_limit_and_thinking_budget(
    gemini: GeminiGenerator, fake_gemini: FakeGemini
) -> None:
    await gemini.generate(PROMPT, temperature=0.4, max_output_tokens=250)

    assert fake_gemini.generation_config() == {
        "temperature": 0.4,
        "maxOutputTokens": 250,
        "thinkingConfig": {"thinkingBudget": 0},
    }


async def test_gemini_leaves_unset_options_and_thinking_to_the_model(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    generator = GeminiGenerator(
        "good-key", "gemini-2.5-pro", base_url=server.url, thinking_budget=None
    )
    try:
        await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert fake.generation_config() == {}


async def test_gemini_blocked_prompt_is_empty_and_blocked(
    gemini: GeminiGenerator, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_blocked()

    assert await gemini.generate(PROMPT) == Generated(text="", finish_reason="SAFETY", blocked=True)


async def test_gemini_safety_stop_on_the_candidate_is_blocked(
    gemini: GeminiGenerator, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("half a sent", finish_reason="SAFETY")

    assert await gemini.generate(PROMPT) == Generated(text="", finish_reason="SAFETY", blocked=True)


async def test_gemini_thoughts_eating_the_limit_give_empty_text_not_an_error(
    gemini: GeminiGenerator, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_max_tokens()

    result = await gemini.generate(PROMPT, max_output_tokens=250)

    assert result == Generated(text="", finish_reason="MAX_TOKENS", blocked=False)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_gemini_transient_statuses_retry_later_after_exactly_one_request(
    gemini: GeminiGenerator, fake_gemini: FakeGemini, status: int
) -> None:
    fake_gemini.fail_next(status, times=5)

    with pytest.raises(RetryLater) as caught:
        await gemini.generate(PROMPT)

    assert caught.value.status == status
    assert caught.value.provider == "gemini"
    assert len(fake_gemini.requests) == 1, "the SDK retried on its own"


@pytest.mark.parametrize("where", ["header", "body", "both"])
async def test_gemini_429_carries_the_requested_wait(
    gemini: GeminiGenerator, fake_gemini: FakeGemini, where: Literal["header", "body", "both"]
) -> None:
    fake_gemini.fail_next(429, retry_after=7, retry_after_in=where)

    with pytest.raises(RetryLater) as caught:
        await gemini.generate(PROMPT)

    assert caught.value.retry_after == 7
    assert "RESOURCE_EXHAUSTED" in str(caught.value)


async def test_gemini_retired_model_is_not_found(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    generator = GeminiGenerator("good-key", "gemini-1.5-flash-latest", base_url=server.url)
    try:
        with pytest.raises(NotFound) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert caught.value.status == 404
    assert "is not found for API version v1beta" in str(caught.value)
    # The fake's model check answered, not a router 404 for a path the SDK got wrong.
    assert fake.models == ["gemini-1.5-flash-latest"]


async def test_gemini_wrong_key_is_rejected(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    generator = GeminiGenerator("bad-key", "gemini-2.5-flash", base_url=server.url)
    try:
        with pytest.raises(Rejected) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == 400
    assert "API key not valid" in str(caught.value)
    assert len(fake.requests) == 1


async def test_gemini_timeout_is_retry_later(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    fake.stall_next(1)
    generator = GeminiGenerator("good-key", "gemini-2.5-flash", base_url=server.url, timeout=0.2)
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert len(fake.requests) == 1


async def test_gemini_unreachable_server_is_retry_later() -> None:
    generator = GeminiGenerator(
        "good-key", "gemini-2.5-flash", base_url=f"http://127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[tuple[FakeOpenAI, RunningServer]]:
    fake = FakeOpenAI(api_key="sk-good", known_models={"gpt-4o-mini"})
    with serve(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake_openai(openai_server: tuple[FakeOpenAI, RunningServer]) -> FakeOpenAI:
    return openai_server[0]


@pytest.fixture
async def gpt(openai_server: tuple[FakeOpenAI, RunningServer]) -> AsyncIterator[OpenAIGenerator]:
    generator = OpenAIGenerator(
        "sk-good", "gpt-4o-mini", base_url=openai_server[1].url + "/v1", timeout=5
    )
    yield generator
    await generator.aclose()


async def test_openai_returns_the_text_and_sends_the_options(
    gpt: OpenAIGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply("Hi Sam! Still thinking about that ficus?")

    result = await gpt.generate(PROMPT, temperature=0.4, max_output_tokens=250)

    assert result == Generated(
        text="Hi Sam! Still thinking about that ficus?", finish_reason="stop"
    )
    assert gpt.name == "openai:gpt-4o-mini"
    request = fake_openai.requests[0]
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"] == [{"role": "user", "content": PROMPT}]
    assert request["temperature"] == 0.4
    assert request["max_completion_tokens"] == 250
    assert "max_tokens" not in request


async def test_openai_omits_unset_options(gpt: OpenAIGenerator, fake_openai: FakeOpenAI) -> None:
    result = await gpt.generate(PROMPT)

    assert result.text == "Hi! Following up on our chat."
    assert "temperature" not in fake_openai.requests[0]
    assert "max_completion_tokens" not in fake_openai.requests[0]


async def test_openai_content_filter_is_blocked(
    gpt: OpenAIGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_blocked()

    assert await gpt.generate(PROMPT) == Generated(
        text="", finish_reason="content_filter", blocked=True
    )


async def test_openai_length_gives_what_came_with_its_reason(
    gpt: OpenAIGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_max_tokens()

    assert await gpt.generate(PROMPT, max_output_tokens=5) == Generated(
        text="", finish_reason="length"
    )


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_openai_transient_statuses_retry_later_after_exactly_one_request(
    gpt: OpenAIGenerator, fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.fail_next(status, times=5)

    with pytest.raises(RetryLater) as caught:
        await gpt.generate(PROMPT)

    assert caught.value.status == status
    assert caught.value.provider == "openai"
    assert len(fake_openai.requests) == 1, "the SDK retried on its own"


async def test_openai_429_carries_retry_after(
    gpt: OpenAIGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail_next(429, retry_after=7)

    with pytest.raises(RetryLater) as caught:
        await gpt.generate(PROMPT)

    assert caught.value.retry_after == 7


async def test_openai_unknown_model_is_not_found(
    openai_server: tuple[FakeOpenAI, RunningServer],
) -> None:
    fake, server = openai_server
    generator = OpenAIGenerator("sk-good", "gpt-3.5-turbo-0301", base_url=server.url + "/v1")
    try:
        with pytest.raises(NotFound) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert "does not exist" in str(caught.value)
    assert len(fake.requests) == 1


async def test_openai_wrong_key_is_rejected(
    openai_server: tuple[FakeOpenAI, RunningServer],
) -> None:
    fake, server = openai_server
    generator = OpenAIGenerator("sk-bad-key-1234", "gpt-4o-mini", base_url=server.url + "/v1")
    try:
        with pytest.raises(Rejected) as caught:
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == 401
    assert "invalid_api_key" in caught.value.body
    assert len(fake.requests) == 1


async def test_openai_timeout_is_retry_later(
    openai_server: tuple[FakeOpenAI, RunningServer],
) -> None:
    fake, server = openai_server
    fake.stall_next(1)
    generator = OpenAIGenerator("sk-good", "gpt-4o-mini", base_url=server.url + "/v1", timeout=0.2)
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()

    assert len(fake.requests) == 1


async def test_openai_unreachable_server_is_retry_later() -> None:
    generator = OpenAIGenerator(
        "sk-good", "gpt-4o-mini", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    try:
        with pytest.raises(RetryLater):
            await generator.generate(PROMPT)
    finally:
        await generator.aclose()


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
async def test_auto_prefers_gemini_and_wires_its_settings(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    generator = build_generator(
        settings(
            gemini=GeminiSettings(
                api_key="good-key", base_url=server.url, model="gemini-2.5-flash-lite"
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
    openai_server: tuple[FakeOpenAI, RunningServer],
) -> None:
    fake, server = openai_server
    generator = build_generator(
        settings(openai=OpenAISettings(api_key="sk-good", base_url=server.url + "/v1"))
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


async def test_gemini_3_models_get_a_thinking_level_not_a_budget(
    gemini_server: tuple[FakeGemini, RunningServer],
) -> None:
    fake, server = gemini_server
    generator = GeminiGenerator("good-key", "gemini-3.5-flash", base_url=server.url)
    try:
        await generator.generate(PROMPT, max_output_tokens=250)
    finally:
        await generator.aclose()
    config = fake.generation_config()
    assert config["maxOutputTokens"] == 250
    assert config["thinkingConfig"] == {"thinkingLevel": "MINIMAL"}, "both at once is a 400"
