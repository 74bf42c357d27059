"""Evaluations during training (``eval.every``): every ``eval.every`` steps the first EMA draws ``eval.every_n``
samples at each of ``eval.steps`` and on each of ``eval.edm_grids`` (its model form's first evaluation solver, from
the teacher's first time); their metrics (for images the Fréchet distance and the other feature scores, see
:mod:`.measure`) go to ``metrics.csv`` and TensorBoard as ``<metric>_N<steps>`` and ``<metric>_edm<i-j-…>``,
and for images a grid of 64 samples of the first sampler to ``RUN/samples/step-NNNNNNN.png`` and TensorBoard.
Sampling uses its own generators, so a resumed run stays identical to an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

from ..core.metrics.frechet import default_features, feature_extractor
from ..core.sampling import DEFAULTS
from ..data import Source
from ..errors import ConfigError
from ..io.images import grid, save_png, to_uint8
from .config import RunConfig
from .measure import W2_MAX, ImageMeter, image_meter, measure_samples


class Monitor:
    """Built before anything is written (a feature extractor that cannot load stops the run there); its
    reference statistics are computed or read by :meth:`start`, once the run directory exists."""

    def __init__(self, cfg: RunConfig, source: Source, device: str, t0: float = 0.0) -> None:
        e = cfg.eval
        self.cfg, self.source, self.device, self.t0 = cfg, source, device, t0
        self.meter: ImageMeter | None = None
        if e.every:
            for name in default_features(source.shape, e.features):
                try:
                    feature_extractor(name, device=device)
                except ConfigError as err:
                    raise ConfigError(f"eval.every={e.every}: {err} (eval.every=0: no evaluation during "
                                      "training)") from None

    def start(self, run_dir: Path) -> None:
        e = self.cfg.eval
        if not e.every:
            return
        self.run_dir = run_dir
        self.meter = image_meter(self.source, e.features, e.reference, run_dir / "stats", self.device, e.batch)
        image = len(self.source.shape) == 3
        self.ref = self.source.reference(min(e.every_n, W2_MAX) if image else e.every_n, seed=e.seed + 1)

    def __call__(self, ema, step: int, log, rank: int) -> dict[str, float]:
        """The metrics at ``step`` (nothing between evaluations); rank 0 writes the grid."""
        e = self.cfg.eval
        if not e.every or step % e.every:
            return {}
        solver = DEFAULTS[ema.form].evaluate[0]
        grids = [(f"N{k}", {"steps": k}) for k in sorted(e.steps)]
        grids += [("edm" + "-".join(map(str, g)), {"edm_grid": g}) for g in e.edm_grids]
        out: dict[str, float] = {}
        for i, (name, spec) in enumerate(grids):
            row, x = measure_samples(ema, self.source, self.ref, e.every_n, e.seed, e.batch, self.meter, e.bins,
                                     solver=solver, t0=self.t0, **spec)
            out.update({f"{key}_{name}": v for key, v in row.items() if key not in ("n", "nfe")
                        and not key.startswith("n_ref")})
            if i == 0 and rank == 0 and x.dim() == 4:
                tiles = grid(to_uint8(x[:64]))
                save_png(self.run_dir / "samples" / f"step-{step:07d}.png", tiles)
                log.image(f"samples_{name}", tiles, step)
        return out
