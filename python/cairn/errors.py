"""Exceptions raised by the `cairn` package.

Every error is a :class:`CairnError`; the subclasses are the conditions a caller may want to handle:
the daemon is not there (:class:`DaemonUnavailable`), a stage's artifacts have no producer
(:class:`MissingArtifacts`, carrying the list and everything that was materialized anyway), the
topology is invalid (:class:`InvalidTopology`, carrying every problem). Messages are the `cairn`
command's: the error, then one ``caused by:`` line per cause.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import FetchResult, Resolved


class CairnError(Exception):
    """Anything that went wrong: bad input, I/O, a refusal by the daemon."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnavailable(CairnError):
    """`cairnd` is not reachable at the address used, or went away during the call."""


class MissingArtifacts(CairnError):
    """Some wanted artifacts have no acceptable producer; everything found was materialized.

    ``missing`` lists them (with the daemon's explanation); ``result`` is the whole
    :class:`~cairn.FetchResult` of the call.
    """

    def __init__(self, message: str, document: str | dict[str, Any] | None = None) -> None:
        super().__init__(message)
        from .types import FetchResult  # noqa: PLC0415  (types imports nothing from here)

        self.result: FetchResult | None = None
        self.missing: list[Resolved] = []
        if document is not None:
            doc = json.loads(document) if isinstance(document, str) else document
            self.result = FetchResult.from_dict(doc)
            self.missing = list(self.result.missing)

    @property
    def artifacts(self) -> list[str]:
        """The names of the missing artifacts."""
        return [m.artifact for m in self.missing]


class InvalidTopology(CairnError):
    """The topology has problems; ``problems`` lists every one (``cairn topology validate``'s)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])
