"""A diffusers ``AutoencoderKL`` from a ``save_pretrained`` folder (a model folder, or a pipeline folder with
``vae/``): ``encode(x) = c · (E(x) − shift)`` (E the posterior mean, c the scaling factor) and its inverse
``decode(z) = D(z/c + shift)``, pinned by the SHA-256 of its files; safetensors weights only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..io.files import sha256
from .teachers import MODEL_CONFIG, _read_json, import_diffusers, safetensors_weights


def load_autoencoder(path: str | Path, device: str = "cpu") -> tuple[Callable[[Tensor], Tensor],
                                                                     Callable[[Tensor], Tensor], dict[str, Any]]:
    """``(encode, decode, identity)`` of the AutoencoderKL at ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"autoencoder {root}: no such folder")
    folder = root / "vae" if (root / "vae").is_dir() else root
    config = _read_json(folder / MODEL_CONFIG)
    if config.get("_class_name") != "AutoencoderKL":
        raise ConfigError(f"{folder / MODEL_CONFIG}: a {config.get('_class_name')}, not an AutoencoderKL")
    weights = safetensors_weights(folder)
    diffusers = import_diffusers("an autoencoder")
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{folder}: diffusers could not load it ({' '.join(str(err).split())[:200]})") from None
    vae = vae.to(device).eval().requires_grad_(False)
    c, shift = float(vae.config.scaling_factor), float(vae.config.shift_factor or 0.0)

    @torch.no_grad()
    def encode(x: Tensor) -> Tensor:
        return c * (vae.encode(x.to(device)).latent_dist.mean - shift)

    @torch.no_grad()
    def decode(z: Tensor) -> Tensor:
        return vae.decode(z.to(device) / c + shift).sample.clamp(-1, 1)

    identity = {"path": str(root.resolve()), "scaling_factor": c, "shift_factor": shift,
                "files": {str(p.relative_to(root)): sha256(p) for p in (folder / MODEL_CONFIG, *weights)}}
    return encode, decode, identity


def decoder_of(identity: dict[str, Any], device: str = "cpu") -> Callable[[Tensor], Tensor]:
    """The decoder a latent store records, refused if its files changed since the store was made."""
    _, decode, now = load_autoencoder(identity["path"], device)
    if now["files"] != identity["files"]:
        raise ConfigError(f"autoencoder {identity['path']}: its files changed since the latents were encoded")
    return decode
