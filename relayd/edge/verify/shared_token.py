"""A shared token in a header or a query parameter, compared in constant time.

For senders that sign nothing but repeat a secret: Telegram's
``X-Telegram-Bot-Api-Secret-Token`` (the ``secret_token`` given to ``setWebhook``),
GitLab's ``X-Gitlab-Token``, or a ``?token=`` in the URL given to the sender. The token
proves only that the sender knows it: the body is not covered and a captured request can
be replayed, so it is weaker than a signature. A query token also travels on to the
destination with the query, as everything the request said does.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from relayd.edge.verify.base import (
    MISSING_TOKEN,
    TOKEN_MISMATCH,
    Headers,
    Rejected,
    Verifier,
    any_equal,
    one_header,
)

__all__ = ["SharedToken"]


class SharedToken(Verifier):
    """``header`` or ``query`` names where the token is (exactly one of them)."""

    def __init__(self, keys: Sequence[bytes], *, header: str = "", query: str = "") -> None:
        self._keys = tuple(keys)
        self._header = header
        self._query = query

    def check(self, headers: Headers, query: str, body: bytes, now: float) -> None:
        if self._header:
            token = one_header(headers, self._header, missing=MISSING_TOKEN,
                               repeated=TOKEN_MISMATCH).encode("latin-1")
        else:
            values = [value for key, value in parse_qsl(query, keep_blank_values=True)
                      if key == self._query]
            if not values:
                raise Rejected(MISSING_TOKEN)
            if len(values) > 1:
                raise Rejected(TOKEN_MISMATCH)
            token = values[0].encode()
        if not any_equal([token], self._keys):
            raise Rejected(TOKEN_MISMATCH)
