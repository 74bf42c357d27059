"""Data sources (:mod:`.sources`): toy sets, Gaussian mixtures, arrays, images, prepared image stores, latents and
teacher pairs, each with its options model; ``data.kind`` chooses one. Every options model has ``build(nested) ->
Source``, where ``nested`` builds a data section held inside it."""

from __future__ import annotations

from typing import Any

from ..core.options import Options, dispatch
from .images import ImagesData
from .latents import LatentsData
from .pairs import PairsData
from .sources import ArrayData, GMMData, Source, check_scale
from .stream import PreparedData
from .toy import ToyData

DATA: dict[str, type[Options]] = {"toy": ToyData, "gmm": GMMData, "array": ArrayData, "pairs": PairsData,
                                  "images": ImagesData, "prepared": PreparedData, "latents": LatentsData}


def data_options(value: Any) -> Options:
    """Validate a ``data`` section (``kind`` defaults to ``toy``) into its options model."""
    return dispatch(value, "data", "kind", "toy", DATA)


def build_source(value: Any) -> Source:
    """The source a ``data`` section (options model or mapping) describes, its data checked to vary. A section
    that holds another (a pair store's record of its teacher's data) builds it with this same function."""
    return check_scale(data_options(value).build(build_source))
