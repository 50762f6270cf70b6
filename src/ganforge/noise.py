"""Random input for the generator: the latent sampler (step 1 of the generator step)."""

from __future__ import annotations

import torch

from ganforge.errors import GanforgeError

DISTRIBUTIONS = ("normal", "uniform")


class NoiseSampler:
    """Draws latent vectors z of shape (n, latent_dim) from its own seeded RNG.

    `normal` is the standard normal N(0, I); `uniform` is uniform on [-1, 1]. The RNG lives
    on the sampler's device, so sampling needs no host round trip, and its state is part
    of every checkpoint (`state_dict`), so a resumed run draws the same noise.
    """

    def __init__(
        self,
        latent_dim: int,
        distribution: str = "normal",
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise GanforgeError(f"latent_dim={latent_dim!r} is invalid: expected an integer >= 1")
        if distribution not in DISTRIBUTIONS:
            raise GanforgeError(
                f"noise={distribution!r} is not a noise distribution: expected one of {', '.join(DISTRIBUTIONS)}"
            )
        self.latent_dim = latent_dim
        self.distribution = distribution
        self.device = torch.device(device)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(seed)

    def sample(self, n: int) -> torch.Tensor:
        """Returns n latent vectors, float32, shape (n, latent_dim), on the sampler's device."""
        if self.distribution == "normal":
            return torch.randn(n, self.latent_dim, generator=self.rng, device=self.device)
        z = torch.rand(n, self.latent_dim, generator=self.rng, device=self.device)
        return z.mul_(2).sub_(1)

    __call__ = sample

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
