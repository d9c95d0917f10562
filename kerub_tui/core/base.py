"""The base of every model kerub-tui validates: frozen, strict about unknown fields, changed only
through :meth:`Frozen.evolve`, which validates the result like a new instance.

pydantic's ``model_copy(update=...)`` validates nothing: ``dyn.model_copy(update={"memory_free": "lots"})``
returns a HostDynamic holding a string where the planner does arithmetic, and an unknown field name is
kept silently. ``evolve`` refuses both with a ValidationError.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Frozen, unknown fields are an error; ``evolve`` is the only way to a changed copy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def evolve(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated as a new instance would be (field validators,
        model validators, unknown names refused). The unchanged fields are passed as they are: nested
        models were validated when they were made and are not validated again."""
        if not changes:
            return self
        data = dict(self.__dict__)
        data.update(changes)
        return self.model_validate(data)
