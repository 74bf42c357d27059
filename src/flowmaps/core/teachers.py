"""Teachers: velocity fields ``b(x, t, label=None)`` that distillation objectives learn from, and the options
that choose one (``teacher.kind``).

:class:`Teacher` is a velocity with what a solve needs to know of it: its base scale σ0, its first time ``t0``
(its largest noise level; every solve starts there, from ``α_{t0} x0``, as EDM's σ_max) and its classes.
:func:`guided` is classifier-free guidance. :class:`GaussianMixture` is the analytic ground truth: its velocity
is exact, and its flow map is an accurate adaptive ODE solve of that velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from torchdiffeq import odeint

from .frames import PREDICTIONS
from .options import Options
from .paths import Interpolant, bcast, interpolant

Velocity = Callable[..., Tensor]  # b(x, t, label=None)


def guided(b: Velocity, w: float, null_class: int) -> Velocity:
    """Classifier-free guidance ``b_w(x, t | k) = (1 + w) b(x, t | k) − w b(x, t | ∅)``, ∅ the label
    ``null_class``; both velocities from one batched call. ``w = 0`` returns ``b`` itself.

    Exact for any frame linear in the prediction: ``b`` is affine in ``x̂1`` (``b = (x̂1 − x)/(1 − t)``), so
    guiding ``x̂1`` or ``ε̂`` guides ``b`` by the same formula."""
    if w == 0:
        return b

    def b_w(x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        if label is None:
            raise ValueError("classifier-free guidance needs class labels")
        null = torch.full_like(label, null_class)
        cond, uncond = b(torch.cat([x, x]), torch.cat([t, t]), torch.cat([label, null])).chunk(2)
        return (1 + w) * cond - w * uncond

    return b_w


@dataclass
class Teacher:
    """A velocity ``b(x, t, label)`` on ``[t0, 1]`` of the linear path with base scale ``sigma0``, as a
    velocity-form model that every solver of :mod:`flowmaps.core.sampling` can sample."""

    b: Velocity
    sigma0: float
    shape: tuple[int, ...]
    t0: float = 0.0
    num_classes: int = 0
    interp: Interpolant = field(default_factory=lambda: interpolant("linear"))
    form: str = "velocity"

    def velocity(self, x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            return self.b(x, t, label)

    __call__ = velocity

    def step(self, x: Tensor, s: Tensor, u: Tensor, label: Tensor | None = None) -> Tensor:
        """An Euler step from s to u."""
        return x + bcast(u - s, x) * self.velocity(x, s, label)


@dataclass
class GaussianMixture:
    """``p_1 = Σ_k w_k N(μ_k, diag(s_k²))`` in any dimension; means (K, D), stds (K, D), weights (K,)."""

    means: Tensor
    stds: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.stds = torch.as_tensor(self.stds, dtype=torch.float64).expand_as(self.means).clone()
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def random(cls, dim: int, components: int = 8, std: float = 0.1, radius: float = 1.0,
               seed: int = 0) -> GaussianMixture:
        """K components with means uniform on the sphere of ``radius``, isotropic ``std``, equal weights."""
        g = torch.Generator().manual_seed(seed)
        means = torch.randn(components, dim, generator=g, dtype=torch.float64)
        means = radius * means / means.norm(dim=1, keepdim=True)
        return cls(means, torch.full((components, dim), std, dtype=torch.float64), torch.ones(components))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def components(self) -> int:
        return self.means.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x, k)``: n draws and the component each came from (the class label of a conditional model)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).float(), k

    def std(self) -> float:
        """Overall standard deviation per coordinate (root mean of the per-coordinate variances)."""
        m = (self.weights[:, None] * self.means).sum(0)
        second = (self.weights[:, None] * (self.means**2 + self.stds**2)).sum(0)
        return float((second - m**2).mean().sqrt())

    def velocity(self, x: Tensor, t: Tensor, interp: Interpolant | None = None, sigma0: float = 1.0,
                 label: Tensor | None = None) -> Tensor:
        """Exact ``b_t(x) = E[İ_t | I_t = x]`` for ``I_t = α x0 + β x1``, ``x0 ~ N(0, σ0² I)``.

        Given component k, ``I_t ~ N(β μ_k, v_k)`` with ``v_k = α² σ0² + β² s_k²`` and
        ``E[x1|x,k] = μ_k + β s_k²/v_k (x - β μ_k)``, ``E[x0|x,k] = α σ0²/v_k (x - β μ_k)``;
        the responsibilities ``r_k ∝ w_k N(x; β μ_k, v_k)`` mix ``α̇ E[x0|x,k] + β̇ E[x1|x,k]``.
        ``label`` (per sample): the class-conditional velocity ``E[İ_t | I_t = x, k = label]`` (``r`` one-hot);
        the label K (the number of components, the null class ∅) keeps the unconditional ``r``.
        """
        interp = interp or interpolant("linear")
        dtype = x.dtype
        x64, t64 = x.double(), t.double().reshape(-1)
        a, b = interp.alpha(t64)[:, None, None], interp.beta(t64)[:, None, None]
        da, db = interp.dalpha(t64)[:, None, None], interp.dbeta(t64)[:, None, None]
        mu, s2 = self.means.to(x.device)[None], (self.stds.to(x.device) ** 2)[None]  # (1, K, D)
        v = a**2 * sigma0**2 + b**2 * s2  # (B, K, D)
        r = x64[:, None, :] - b * mu
        logp = -0.5 * (r**2 / v + torch.log(v)).sum(-1) + torch.log(self.weights.to(x.device))[None]
        resp = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
        if label is not None:
            label = label.to(x.device).long()
            one = torch.nn.functional.one_hot(label.clamp(max=self.components - 1), self.components).to(x64)
            resp = torch.where((label == self.components)[:, None, None], resp, one[..., None])
        e1 = mu + b * s2 / v * r
        e0 = a * sigma0**2 / v * r
        return (resp * (da * e0 + db * e1)).sum(1).to(dtype)

    def teacher(self, interp: Interpolant | None = None, sigma0: float = 1.0) -> Callable[..., Tensor]:
        """The exact velocity as a plain ``b(x, t, label=None)`` callable."""
        return lambda x, t, label=None: self.velocity(x, t, interp, sigma0, label)

    @torch.no_grad()
    def flow_map(self, x: Tensor, s: Tensor, t: Tensor, interp: Interpolant | None = None, sigma0: float = 1.0,
                 rtol: float = 1e-9, atol: float = 1e-10, label: Tensor | None = None) -> Tensor:
        """Exact ``X_{s,t}(x)`` by a float64 dopri5 solve in a normalized time τ ∈ [0, 1] (per-sample s, t);
        ``label``: the flow of the class-conditional velocity."""
        s64, t64 = s.double().reshape(-1), t.double().reshape(-1)

        def f(tau: Tensor, y: Tensor) -> Tensor:
            time = s64 + tau * (t64 - s64)
            return bcast(t64 - s64, y) * self.velocity(y, time, interp, sigma0, label)

        tau = torch.tensor([0.0, 1.0], dtype=torch.float64)
        return odeint(f, x.double(), tau, rtol=rtol, atol=atol, method="dopri5")[-1].to(x.dtype)


class TeacherOptions(Options):
    """What every teacher kind shares: distilling it guided at a fixed scale."""

    guidance: float = Field(0.0, ge=0, description="classifier-free guidance scale w: distill "
                            "b_w = (1 + w) b(·|k) − w b(·|∅) (a class-conditional teacher with a null class)")


class AnalyticTeacher(TeacherOptions):
    """``teacher.kind: analytic`` — the exact velocity of the data's Gaussian mixture (``data.kind: gmm``); its
    null class ∅ (label = number of components) is the unconditional mixture."""

    kind: Literal["analytic"] = "analytic"


class RunTeacher(TeacherOptions):
    """``teacher.kind: run`` — the velocity of a trained flowmaps run directory at ``path``, pinned by the
    SHA-256 of its config and checkpoint when a distillation starts. ``init``: the student starts from the
    teacher's (EMA) weights, which needs the teacher's network (same ``model`` section); its diagonal ``v(x, t, t)``
    is then the teacher's velocity from the first step."""

    kind: Literal["run"] = "run"
    path: str
    init: bool = False


class DiffusersTeacher(TeacherOptions):
    """``teacher.kind: diffusers`` — a diffusers ``UNet2DModel`` on a variance-preserving schedule, from a
    ``save_pretrained`` folder ``path`` (a pipeline folder with ``unet/`` and ``scheduler/``, or a model folder
    with ``scheduler_config.json`` beside it; safetensors weights only), converted exactly to the t-frame
    (:mod:`flowmaps.core.frames`) and pinned by the SHA-256 of its files."""

    kind: Literal["diffusers"] = "diffusers"
    path: str
    prediction: Literal[PREDICTIONS] | None = Field(  # type: ignore[valid-type]
        None, description="epsilon | v_prediction | sample; null: the scheduler config's prediction_type")
    null_class: bool = Field(False, description="the last class embedding is the unconditional one ∅ (trained "
                             "with label dropout): the model has num_class_embeds − 1 classes")


class PythonTeacher(TeacherOptions):
    """``teacher.kind: python`` — ``target`` (``package.module:factory`` or ``path/to/file.py:factory``) called
    with ``options`` returns a :class:`Teacher` (or a plain ``b(x, t, label=None)`` in the t-frame, t0 = 0);
    pinned by the target, the options and, for a file, its SHA-256."""

    kind: Literal["python"] = "python"
    target: str = Field(pattern=r"^[^:]+:[A-Za-z_][A-Za-z_0-9.]*$")
    options: dict[str, Any] = Field(default_factory=dict)


TEACHERS: dict[str, type[Options]] = {"analytic": AnalyticTeacher, "run": RunTeacher, "diffusers": DiffusersTeacher,
                                      "python": PythonTeacher}
