"""How sure a success rate is: the Wilson score interval.

With 10-100 episodes a success rate alone misleads (9/10 and 90/100 are both "90 %"); the
Wilson interval is the usual one for a binomial proportion at small n (it stays inside
[0, 1] and is not degenerate at 0/n or n/n, unlike the normal approximation).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the 95 % Wilson score interval of successes/n, as fractions in [0, 1].
    n = 0 gives (0, 1): nothing is known. Raises ValueError for counts outside 0..n.

    `z` is the normal quantile (Z95 for 95 %). Source: E. B. Wilson, "Probable inference,
    the law of succession, and statistical inference", JASA 22 (1927), 209-212.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be in 0..n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval holds p exactly; in floating point n/n gave a high of 1 - 2**-53 < p,
    # a negative error bar for whoever draws p with its interval.
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


def rate_with_interval(successes: int, n: int) -> str:
    """'9/10 (90 %, 95 % CI 60-98 %)'."""
    low, high = wilson_interval(successes, n)
    rate = successes / n if n else 0.0
    return f"{successes}/{n} ({100 * rate:.0f} %, 95 % CI {100 * low:.0f}-{100 * high:.0f} %)"
