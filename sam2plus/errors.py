"""Errors that answer a request with a 4xx status and a message naming the offending field."""

from __future__ import annotations

import json

__all__ = ["RequestError", "Stopped", "describe"]


class RequestError(Exception):
    """Bad input from the client: answered with `status` and ``{"error": message}``.

    `field` is the dotted path of what was wrong (``extra_params.subpatching.patch_size``); the
    message always starts with it so that the one line a Label Studio user sees names it.
    """

    def __init__(self, field: str, problem: str, status: int = 400):
        self.field = field
        self.problem = problem
        self.status = status
        self.problems: tuple[str, ...] = (f"{field}: {problem}" if field else problem,)
        super().__init__(self.problems[0])

    @property
    def message(self) -> str:
        return str(self)

    @classmethod
    def combine(cls, errors: list[RequestError]) -> RequestError:
        """One error holding several, in order: the first's field and status, every message
        `; `-separated in `message`, and each of them in `problems`."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.field, "; ".join([first.problem, *(error.message for error in errors[1:])]), first.status)
        combined.problems = tuple(error.message for error in errors)
        return combined


class Stopped(Exception):
    """The client went away, so the request stopped at a stage boundary; nobody reads an answer."""


def describe(value: object, limit: int = 60) -> str:
    """A short JSON-like rendering of a user value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
