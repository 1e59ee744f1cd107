"""A whole-call time bound for HTTP model endpoints.

httpx's timeouts bound each connect and each read: an endpoint that streams one
chunk every 2 s never trips a 3 s read timeout and may hold a run for as long as
it likes. This transport bounds the whole request, streamed body included, and
ends it with `DecoderUnavailable` (closing the connection) once the time is up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx

from state.errors import DecoderUnavailable


class DeadlineTransport(httpx.HTTPTransport):
    """An httpx transport whose every request must finish (body included) within `total_s` seconds."""

    def __init__(self, total_s: float, **kwargs):
        super().__init__(**kwargs)
        self.total_s = total_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.total_s
        response = super().handle_request(request)
        response.stream = _Bounded(response.stream, deadline, self.total_s, str(request.url))
        return response


class _Bounded(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, deadline: float, total_s: float, url: str):
        self.inner, self.deadline, self.total_s, self.url = inner, deadline, total_s, url

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            if time.monotonic() > self.deadline:
                self.close()
                raise DecoderUnavailable(f"the endpoint {self.url} was still answering after {self.total_s:g}s "
                                         "(decoder_timeout_s bounds the whole call): raise it or use a faster model")
            yield chunk

    def close(self) -> None:
        self.inner.close()


def bounded_client(total_s: float) -> httpx.Client:
    """An httpx client for one endpoint: each read bounded by `total_s`, and so is the whole call."""
    return httpx.Client(transport=DeadlineTransport(total_s), timeout=total_s)
