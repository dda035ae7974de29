"""``BUILD_TOPOLOGY.toml``: TheRock's ``BuildTopology`` queries over Cairn's Rust model."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from . import _native
from .errors import CairnError, InvalidTopology


class Topology:
    """A loaded topology. Loading checks syntax only; :meth:`validate` lists every problem."""

    def __init__(self, path: str | PathLike[str] = "BUILD_TOPOLOGY.toml") -> None:
        try:
            self._t = _native.Topology(Path(path))
        except ValueError as e:
            raise CairnError(str(e)) from None

    @property
    def path(self) -> Path:
        return Path(self._t.path)

    @property
    def stages(self) -> list[str]:
        """Build stages, in declaration order."""
        return self._t.stages

    @property
    def artifact_groups(self) -> list[str]:
        return self._t.artifact_groups

    @property
    def artifacts(self) -> list[str]:
        return self._t.artifacts

    def inbound(self, stage: str) -> list[str]:
        """What ``stage`` fetches (TheRock's ``get_inbound_artifacts``), sorted."""
        try:
            return self._t.inbound(stage)
        except ValueError as e:
            raise CairnError(str(e)) from None

    def produced(self, stage: str) -> list[str]:
        """What ``stage`` builds (TheRock's ``get_produced_artifacts``), sorted."""
        try:
            return self._t.produced(stage)
        except ValueError as e:
            raise CairnError(str(e)) from None

    def build_order(self) -> list[str]:
        return self._t.build_order()

    def validate(self) -> list[str]:
        """Every problem (TheRock's ``validate_topology``); empty when valid."""
        return self._t.validate()

    def check(self) -> None:
        """Raise :class:`InvalidTopology` with every problem unless the topology is valid."""
        problems = self.validate()
        if problems:
            raise InvalidTopology(
                f"topology `{self.path}` is invalid ({len(problems)} problem(s)): "
                + "; ".join(problems),
                problems,
            )
