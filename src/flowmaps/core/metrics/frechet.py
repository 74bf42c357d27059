"""Fréchet distance between image sets in a feature space, and the Inception Score.

``FD = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` between Gaussians fitted to the two
sets' features (the FID when the features are Inception-v3's 2048-d pool features). The matrix square root's
trace is computed from the eigenvalues of the symmetric PSD ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` in float64.

Feature extractors (``feature_extractor(name)``):

- ``digits``: the project's digits classifier (:mod:`flowmaps.core.metrics.digits`, 64-d), shipped with the package;
- ``inception``: Inception-v3 through ``torch-fidelity`` (the ``images`` extra) with weights from a local file,
  ``FLOWMAPS_INCEPTION_WEIGHTS`` or the ``weights`` argument (torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth``); images are fed as uint8 RGB, as every FID library does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)


def gaussian_stats(feats: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = feats.detach().reshape(len(feats), -1).double().cpu().numpy()
    if len(f) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples per set, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance² between N(μ_a, Σ_a) and N(μ_b, Σ_b)."""
    root = _sqrt_psd(cov_a)
    mid = np.linalg.eigvalsh((root @ cov_b @ root + (root @ cov_b @ root).T) / 2)
    tr_sqrt = np.sqrt(np.clip(mid, 0, None)).sum()
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt, 0.0))


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """FD between the Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    if feats_a.shape[1:] != feats_b.shape[1:]:
        raise ValueError(f"feature sets differ in dimension: {tuple(feats_a.shape)} vs {tuple(feats_b.shape)}")
    return frechet_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def inception_score(logits: Tensor, splits: int = 1) -> float:
    """``exp(E_x KL(p(y|x) ‖ p(y)))`` from class logits (N, K), averaged over ``splits`` equal chunks."""
    scores = []
    for chunk in logits.double().chunk(splits):
        logp = torch.log_softmax(chunk, dim=1)
        logpy = torch.logsumexp(logp, dim=0) - np.log(len(chunk))
        scores.append(float((logp.exp() * (logp - logpy)).sum(1).mean().exp()))
    return float(np.mean(scores))


# ----- feature extractors ---------------------------------------------------------------------------

Extractor = Callable[[Tensor], dict[str, Tensor]]  # images in [-1, 1] -> {"features": (N, D), "logits": (N, K)}


def _batched(fn: Callable[[Tensor], dict[str, Tensor]], batch: int) -> Extractor:
    @torch.no_grad()
    def run(x: Tensor) -> dict[str, Tensor]:
        parts = [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    return run


def digits_features(weights: str | Path | None = None) -> Extractor:
    from .digits import WEIGHTS, load_classifier

    net = load_classifier(weights or WEIGHTS)

    def fn(x: Tensor) -> dict[str, Tensor]:
        f = net.features(x.float().cpu())
        return {"features": f, "logits": net.head(f)}

    return _batched(fn, 1024)


def inception_features(weights: str | Path | None = None, device: str = "cpu") -> Extractor:
    weights = weights or os.environ.get("FLOWMAPS_INCEPTION_WEIGHTS")
    if not weights or not Path(weights).is_file():
        raise ConfigError(
            f"Inception features need local weights: download {INCEPTION_URL} once and set "
            f"FLOWMAPS_INCEPTION_WEIGHTS to the file (got {weights!r})")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise ConfigError("Inception features need torch-fidelity: pip install 'flowmaps[images]'") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(weights)).to(device).eval()

    def fn(x: Tensor) -> dict[str, Tensor]:
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).to(device)
        feats, logits = net(u8)
        return {"features": feats.double().cpu(), "logits": logits.double().cpu()}

    return _batched(fn, 200)


EXTRACTORS: dict[str, Callable[..., Extractor]] = {"digits": digits_features, "inception": inception_features}


def feature_extractor(name: str, weights: str | Path | None = None) -> Extractor:
    """An extractor by name: ``digits`` or ``inception`` (see the module docstring)."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](weights)


def image_metrics(x: Tensor, ref: Tensor, features: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``fd_<name>`` for each feature set (and ``is_inception`` for Inception) of samples x against ref."""
    out: dict[str, float] = {}
    for name in features:
        ext = feature_extractor(name)
        fx, fr = ext(x), ext(ref)
        out[f"fd_{name}"] = frechet_distance(fx["features"], fr["features"])
        if name == "inception":
            out["is_inception"] = inception_score(fx["logits"], splits=10)
    return out
