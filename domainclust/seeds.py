"""One way to derive independent seeds from a run seed and the coordinates of a random choice."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**31) determined by `parts` (e.g. run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % 2**31)
