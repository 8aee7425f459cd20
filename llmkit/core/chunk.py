"""The base of result types that are plain ``__slots__`` objects (``StreamChunk``): made
once per stream event, so one costs what a plain object costs (no validation, no
per-instance dict or field set), with the pydantic-style surface of the other result types
(``model_fields``, ``model_dump``, ``model_validate``, ``model_copy``, value equality, the
same ``repr``, pickling, use as a field of a pydantic model)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema
    from typing_extensions import Self

__all__ = ["SlotsResult"]

_new = object.__new__
_set = object.__setattr__


class SlotsResult:
    """Subclasses set ``__slots__`` (the field names, in order), ``model_fields`` (their
    defaults) and ``nested`` (field name -> the pydantic model its value, or each item of
    its list value, is made of when validated from a dict)."""

    __slots__ = ()
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    nested: ClassVar[dict[str, Any]] = {}

    @classmethod
    def _trusted(cls, fields: dict[str, Any]) -> Self:
        """An instance from checked values; ``fields`` names every field."""
        obj = _new(cls)
        for name in cls.model_fields:
            _set(obj, name, fields[name])
        return obj

    @classmethod
    def model_validate(cls, obj: Any) -> Self:
        """An instance from an instance or a dict (as :meth:`model_dump` gives, JSON mode
        too)."""
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, dict):
            raise TypeError(f"{cls.__name__}.model_validate takes a dict, not {type(obj).__name__}")
        unknown = set(obj) - set(cls.model_fields)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        values = dict(obj)
        for name, model in cls.nested.items():
            value = values.get(name)
            if isinstance(value, dict):
                values[name] = model.model_validate(value)
            elif isinstance(value, list):
                values[name] = [model.model_validate(v) for v in value]
        return cls(**values)

    def model_dump(
        self,
        *,
        mode: str = "python",
        include: Any = None,
        exclude: Any = None,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        nested = self.nested
        for name, field in self.model_fields.items():
            if (include is not None and name not in include) or (exclude and name in exclude):
                continue
            value = getattr(self, name)
            if exclude_none and value is None:
                continue
            if exclude_defaults and value == _default(field):
                continue
            if name in nested and value is not None:
                if isinstance(value, list):
                    value = [v.model_dump(mode=mode) for v in value]
                else:
                    value = value.model_dump(mode=mode)
            out[name] = value
        return out

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        values = {name: getattr(self, name) for name in self.model_fields}
        if deep:
            values = copy.deepcopy(values)
        if update:
            values.update(update)
        return self._trusted(values)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls.model_validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda obj: obj.model_dump()
            ),
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.model_fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}={getattr(self, n)!r}" for n, f in self.model_fields.items() if f.repr
        )
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(getattr(self, n) for n in self.model_fields)))


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _rebuild(cls: type[SlotsResult], values: tuple[Any, ...]) -> SlotsResult:
    obj = _new(cls)
    for name, value in zip(cls.model_fields, values, strict=True):
        _set(obj, name, value)
    return obj
