"""The base of every options model (objectives, networks, data sources, teachers): a typo is an error.

A config section that comes in several variants is a union discriminated by one key (``objective.method``,
``model.net``, ``data.kind``, ``teacher.kind``): :func:`dispatch` validates the section with the model its key
names, so the options of one variant are unknown keys in another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Typed options: unknown keys, wrong types and out-of-range values fail at validation."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def dispatch(value: Any, section: str, key: str, default: str | None,
             models: Mapping[str, type[Options]] | Callable[[str], type[Options]],
             names: Callable[[], list[str]] | None = None) -> Any:
    """Validate the mapping ``value`` (the config section ``section``) with the model that its ``key`` (or
    ``default``) names in ``models`` (a mapping, or a function of the name); an options model passes unchanged."""
    if isinstance(value, Options):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping with {key}, got {type(value).__name__}")
    tag = value.get(key, default)
    choices = names() if names is not None else sorted(models)  # type: ignore[arg-type]
    if tag is None:
        raise ValueError(f"{section}.{key} is missing; choose one of {', '.join(choices)}")
    if not isinstance(tag, str) or tag not in choices:
        raise ValueError(f"unknown {section} {key} {tag!r}; choose one of {', '.join(choices)}")
    model = models(tag) if callable(models) else models[tag]
    return model.model_validate(dict(value))
