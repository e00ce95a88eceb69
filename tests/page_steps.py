"""What a browser does with our payment pages' answers: every post is answered 303 back to a page
of ours, which it then shows; a final payment's page leads on to Alipay+ by its Continue link."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import httpx

from api.pages import link


async def shown_after(http: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    """The page a browser shows after ``response``: a 303 to a page of ours is followed (GET)."""
    location = response.headers.get("location", "")
    if response.status_code == 303 and location.startswith("/"):
        return await http.get(location)
    return response


def handed_on(page: httpx.Response) -> str | None:
    """Where our result page's Continue leads (Alipay+'s result page), if anywhere."""
    return link(page.text, "continue")


def status_handed_on(page: httpx.Response) -> str | None:
    """The ``status`` our result page hands on to Alipay+'s (``success`` / ``fail``)."""
    found = re.search(r"[?&]status=(\w+)", handed_on(page) or "")
    return found.group(1) if found else None


def back_to(page: str, response: httpx.Response) -> bool:
    """Whether a post was answered 303 back to ``page`` (the path, with or without a notice)."""
    location = urlsplit(response.headers.get("location", "")).path
    return response.status_code == 303 and unquote(location) == unquote(page)
