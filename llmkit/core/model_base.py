"""The base of llmkit's pydantic result and message models (:class:`TrustedModel`): schemas
built on first use, and instances made from values a wire parser already checked without
validating them again (the hot path of responses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["TrustedModel"]


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The setter of one of BaseModel's own slots: called directly, it costs a fraction of
    ``object.__setattr__`` (no attribute lookup through the model's class)."""
    slot = BaseModel.__dict__.get(name)
    setter = getattr(slot, "__set__", None)
    if setter is None:  # pragma: no cover - a pydantic without these slots
        return lambda obj, value: object.__setattr__(obj, name, value)
    return setter  # type: ignore[no-any-return]


_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
_new_object = object.__new__


class TrustedModel(BaseModel):
    # Schemas are built on first use, not at import time.
    model_config = ConfigDict(defer_build=True)

    @classmethod
    def _trusted(cls, fields: dict[str, Any]) -> Self:
        """An instance from values a wire parser has already checked, without validation
        (the hot path of responses and stream chunks): ``fields`` must name every field
        and is used as the instance's ``__dict__``."""
        obj = _new_object(cls)
        _set_dict(obj, fields)
        _set_fields_set(obj, set(fields))
        # (a set per instance: pydantic adds to it when a field is assigned)
        _set_extra(obj, None)
        _set_private(obj, None)
        return obj
