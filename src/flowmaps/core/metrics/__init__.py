"""Sample-quality and flow-geometry metrics."""

from flowmaps.core.metrics.distribution import energy_distance, kl_histogram, wasserstein2
from flowmaps.core.metrics.straightness import straightness, trajectories

__all__ = ["energy_distance", "kl_histogram", "straightness", "trajectories", "wasserstein2"]
