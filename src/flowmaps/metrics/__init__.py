"""Sample-quality and flow-geometry metrics."""

from flowmaps.metrics.distribution import energy_distance, kl_histogram, wasserstein2
from flowmaps.metrics.straightness import straightness, trajectories

__all__ = ["energy_distance", "kl_histogram", "straightness", "trajectories", "wasserstein2"]
