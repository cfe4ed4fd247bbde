"""Seeds mixed from integer keys: the one way every per-item random draw in diffx gets its generator.

The planner seeds each planned scene by (run seed, index) and the training reader each sample by (run seed,
position, purpose); both go through :func:`seed_for`, so a seed means the same thing wherever it is drawn.
"""

from __future__ import annotations

import numpy as np


def seed_for(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (SeedSequence spreads nearby keys apart)."""
    return int(
        np.random.SeedSequence([k & 0xFFFFFFFF for k in keys] + [len(keys)]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )
