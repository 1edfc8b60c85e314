"""Which backend made which response: a request that continues one (``previous_response_id``) must go there.

The gateway stores no responses; a backend that serves the Responses API natively may (``store: true``). Its
response ids are noted as its answers pass, so a follow-up can be pinned to it. The table is per gateway
process and forgets the least recently used past its capacity; a follow-up to a forgotten id may go to any
backend that serves Responses natively, which answers it, or says it does not know it.
"""

from __future__ import annotations

import re
from collections import OrderedDict

# The first "id" of a response object, or of the response.created event that opens a stream.
_RESPONSE_ID = re.compile(rb'"id"\s*:\s*"(resp_[A-Za-z0-9_-]{1,200})"')


class ResponseOwners:
    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._owners: OrderedDict[str, str] = OrderedDict()

    def owner(self, response_id: str) -> str | None:
        backend = self._owners.get(response_id)
        if backend is not None:
            self._owners.move_to_end(response_id)
        return backend

    def remember(self, response_id: str, backend: str) -> None:
        self._owners[response_id] = backend
        self._owners.move_to_end(response_id)
        if len(self._owners) > self._capacity:
            self._owners.popitem(last=False)


def response_id_in(data: bytes) -> str | None:
    """The first response id in a native answer (whole, or the start of its stream), if there is one."""
    found = _RESPONSE_ID.search(data, 0, 64 * 1024)
    return found.group(1).decode() if found is not None else None
