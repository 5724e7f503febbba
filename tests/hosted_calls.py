"""Shared by the hosted-backend tests: a small request, and concurrent calls whose failures come back as values."""

from __future__ import annotations

import asyncio
from typing import Any

from vau_annotate.annotate.backends import BackendError, Message, Request, Result, SamplingParams, TextPart


def ask(text: str = "hello", *parts: Any, params: SamplingParams | None = None) -> Request:
    return Request(messages=(Message.text("system", "be brief"), Message("user", (*parts, TextPart(text)))), params=params or SamplingParams())


def run(backend: Any, *requests: Request) -> list[Result | BackendError]:
    """Send the requests concurrently on one backend, then close it; failures come back as values."""

    async def go() -> list[Result | BackendError]:
        try:
            return list(await asyncio.gather(*(backend.generate(r) for r in requests), return_exceptions=True))
        finally:
            await backend.aclose()

    return asyncio.run(go())


def run_serially(backend: Any, request: Request, times: int) -> list[Result | BackendError]:
    """Send the same request `times` times, one after another (each scripted fault in turn)."""

    async def go() -> list[Result | BackendError]:
        outcomes: list[Result | BackendError] = []
        try:
            for _ in range(times):
                try:
                    outcomes.append(await backend.generate(request))
                except BackendError as error:
                    outcomes.append(error)
        finally:
            await backend.aclose()
        return outcomes

    return asyncio.run(go())
