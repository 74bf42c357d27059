"""Feature-space metrics of image sets: the Fréchet distance (FID with Inception features), the kernel distance
(KID), precision and recall, and the Inception Score.

- ``FD = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` between Gaussians fitted to the two
  sets' features; the trace of the matrix square root from the eigenvalues of the symmetric PSD
  ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` in float64. A set enters only through :class:`Statistics` (μ, Σ, its size and
  optionally a subset of its features), so a reference can be a published ``.npz`` of ``mu`` and ``sigma``.
- ``KID``: the unbiased MMD² with the kernel ``k(a, b) = (aᵀb/D + 1)³``, averaged over ``subsets`` random
  subsets of ``subset_size`` samples of each set (torch-fidelity's definition and defaults, 100 × 1000).
- precision / recall (*Improved Precision and Recall Metric for Assessing Generative Models*, Kynkäänniemi,
  Karras, Laine, Lehtinen and Aila): the fraction of generated samples inside the union of the reference
  samples' k-NN balls (k = 3), and of reference samples inside the generated samples' balls.

Feature extractors (:data:`EXTRACTORS`, :func:`feature_extractor`): ``digits``, the project's digits classifier
(64-d, shipped); ``inception``, Inception-v3 through torch-fidelity (the ``images`` extra) with weights from a
local file (``FLOWMAPS_INCEPTION_WEIGHTS`` or ``weights``: torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``), fed uint8 RGB as every FID library does. Each extractor has an
``identity`` (its name and the SHA-256 of its weights) that keys cached reference statistics.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError
from ...io.files import sha256

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)
KEEP = 10_000  # features of each set kept for KID and precision/recall


@dataclass
class Statistics:
    """A feature set summarised: mean (D,), unbiased covariance (D, D), size, and up to :data:`KEEP` of its
    feature rows (a uniform subset; None for published statistics, which hold μ and Σ only)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None


class Accumulator:
    """:class:`Statistics` of features arriving in batches: float64 sums for μ and Σ, and a seeded uniform
    reservoir of :data:`KEEP` rows."""

    def __init__(self, seed: int = 0) -> None:
        self.n, self.total, self.outer, self.kept = 0, None, None, []
        self.rng = np.random.default_rng(seed)

    def add(self, feats: Tensor) -> None:
        f = feats.detach().reshape(len(feats), -1).double().cpu().numpy()
        if self.total is None:
            self.total, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.total += f.sum(0)
        self.outer += f.T @ f
        for row in f.astype(np.float32):  # reservoir sampling (Algorithm R)
            if len(self.kept) < KEEP:
                self.kept.append(row)
            else:
                j = self.rng.integers(0, self.n + 1)
                if j < KEEP:
                    self.kept[j] = row
            self.n += 1

    def statistics(self) -> Statistics:
        if self.n < 2:
            raise ValueError(f"the Fréchet distance needs at least 2 samples per set, got {self.n}")
        mu = self.total / self.n
        sigma = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return Statistics(mu, (sigma + sigma.T) / 2, self.n, np.stack(self.kept))


def statistics(feats: Tensor | Iterable[Tensor], seed: int = 0) -> Statistics:
    """:class:`Statistics` of a feature set (N, D), or of batches of one."""
    acc = Accumulator(seed)
    for f in [feats] if isinstance(feats, Tensor) else feats:
        acc.add(f)
    return acc.statistics()


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


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID's mean and standard deviation over subsets (see the module docstring); the subset size is at most
    the smaller set's size."""
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.RandomState(seed)
    kernel = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # noqa: E731
    out = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)].astype(np.float64)
        y = b[rng.choice(len(b), m, replace=False)].astype(np.float64)
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        out.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(out)), float(np.std(out))


def _kth_radius(f: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Each row's distance to its k-th nearest other row."""
    return torch.cat([torch.cdist(f[i:i + chunk], f).kthvalue(k + 1, dim=1).values for i in range(0, len(f), chunk)])


def _covered(f: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> float:
    """The fraction of rows of f inside some ball (centre, radius)."""
    inside = [(torch.cdist(f[i:i + chunk], centres) <= radii).any(1) for i in range(0, len(f), chunk)]
    return float(torch.cat(inside).float().mean())


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision (generated samples within the reference manifold) and recall (reference samples within the
    generated manifold), manifolds as unions of k-NN balls."""
    g, r = torch.from_numpy(np.asarray(gen, np.float32)), torch.from_numpy(np.asarray(ref, np.float32))
    if min(len(g), len(r)) <= k:
        raise ValueError(f"precision and recall with k = {k} need more than {k} samples per set")
    return _covered(g, r, _kth_radius(r, k)), _covered(r, g, _kth_radius(g, k))


def scores(gen: Statistics, ref: Statistics, name: str) -> dict[str, float]:
    """``fd_<name>``, and where both sets kept features ``kid_<name>``, ``precision_<name>``, ``recall_<name>``."""
    if gen.mu.shape != ref.mu.shape:
        raise ConfigError(f"reference statistics of {ref.mu.shape[0]}-d features, but {name} features are "
                          f"{gen.mu.shape[0]}-d; use statistics of the same feature extractor")
    out = {f"fd_{name}": frechet_from_stats(gen.mu, gen.sigma, ref.mu, ref.sigma)}
    if gen.features is not None and ref.features is not None:
        out[f"kid_{name}"] = kid(gen.features, ref.features)[0]
        out[f"precision_{name}"], out[f"recall_{name}"] = precision_recall(gen.features, ref.features)
    return out


def inception_score(logits: Tensor, splits: int = 1) -> float:
    """``exp(E_x KL(p(y|x) ‖ p(y)))`` from class logits (N, K), averaged over ``splits`` equal chunks."""
    result = []
    for chunk in logits.double().chunk(splits):
        logp = torch.log_softmax(chunk, dim=1)
        logpy = torch.logsumexp(logp, dim=0) - np.log(len(chunk))
        result.append(float((logp.exp() * (logp - logpy)).sum(1).mean().exp()))
    return float(np.mean(result))


# ----- feature extractors ---------------------------------------------------------------------------


@dataclass
class Extractor:
    """A feature network: ``extractor(x)`` for images in [−1, 1] gives ``{"features": (N, D)}`` (and ``"logits"``
    where it classifies), in batches of ``batch``; ``identity`` names it and its weights."""

    name: str
    identity: str
    fn: Callable[[Tensor], dict[str, Tensor]]
    batch: int = 200

    @torch.no_grad()
    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        parts = [self.fn(x[i:i + self.batch]) for i in range(0, len(x), self.batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def digits_features(weights: str | Path | None = None, device: str = "cpu") -> Extractor:
    from .digits import WEIGHTS, load_classifier

    path = weights or WEIGHTS
    net = load_classifier(path).to(device)

    def fn(x: Tensor) -> dict[str, Tensor]:
        f = net.features(x.float().to(device))
        return {"features": f.cpu(), "logits": net.head(f).cpu()}

    return Extractor("digits", f"digits:{sha256(path)}", fn, 1024)


def inception_features(weights: str | Path | None = None, device: str = "cpu") -> Extractor:
    weights = weights or os.environ.get("FLOWMAPS_INCEPTION_WEIGHTS")
    if not weights or not Path(weights).is_file():
        raise ConfigError(
            f"Inception features need local weights: download {INCEPTION_URL} once and set "
            f"FLOWMAPS_INCEPTION_WEIGHTS to the file (got {weights!r}), or set eval.features to another extractor")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise ConfigError("Inception features need torch-fidelity (and a torchvision that imports): "
                          "pip install 'flowmaps[images]'") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(weights)).to(device).eval()

    def fn(x: Tensor) -> dict[str, Tensor]:
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        u8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).to(device)
        feats, logits = net(u8)
        return {"features": feats.double().cpu(), "logits": logits.double().cpu()}

    return Extractor("inception", f"inception-v3-compat:{sha256(weights)}", fn, 200)


EXTRACTORS: dict[str, Callable[..., Extractor]] = {"digits": digits_features, "inception": inception_features}


def register_extractor(name: str, factory: Callable[..., Extractor]) -> None:
    """Make ``factory(weights=None, device="cpu") -> Extractor`` available as ``eval.features: [name]``."""
    EXTRACTORS[name] = factory


def feature_extractor(name: str, weights: str | Path | None = None, device: str = "cpu") -> Extractor:
    """An extractor by name (see :data:`EXTRACTORS`), built without touching the global RNG (its layers' default
    initialisation would otherwise shift a training run's random stream)."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    with torch.random.fork_rng(devices=[]):
        return EXTRACTORS[name](weights, device)


def default_features(shape: tuple[int, ...], features: list[str] | None) -> list[str]:
    """The feature sets that measure images of ``shape``: ``features`` when configured, else the digits classifier
    for one channel and Inception for RGB; none for data that are not images (vectors, latents of other channel
    counts)."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        return []
    if features is not None:
        return list(features)
    return ["digits"] if shape[0] == 1 else ["inception"]
