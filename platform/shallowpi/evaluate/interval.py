"""How sure a success rate is (the Wilson score interval), and whether one policy beats
another on the same seeds (the exact McNemar test).

With 10-100 episodes a success rate alone misleads (9/10 and 90/100 are both "90 %"); the
Wilson interval is the usual one for a binomial proportion at small n (it stays inside
[0, 1] and is not degenerate at 0/n or n/n, unlike the normal approximation). Two policies
evaluated on the same seeds are compared seed by seed: only the seeds where exactly one of
them succeeded say which is better, and two overlapping intervals can still hide a clear
difference there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def rate_with_interval(successes: int, n: int, decimals: int = 0) -> str:
    """'9/10 (90 %, 95 % CI 60-98 %)'; with decimals=1 '174/200 (87.0 %, 95 % CI 81.6-91.0 %)':
    at a few hundred episodes a rate moves in half points, which whole percents round away
    (87.0 % printed as 87 % beside an interval from 87.4 % printed as 87-95 %)."""
    low, high = wilson_interval(successes, n)
    rate = successes / n if n else 0.0
    d = decimals
    return f"{successes}/{n} ({100 * rate:.{d}f} %, 95 % CI {100 * low:.{d}f}-{100 * high:.{d}f} %)"


def paired_p_value(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for two policies run on the same seeds: `only_a`
    seeds succeeded with A alone, `only_b` with B alone (seeds where both or neither
    succeeded say nothing). Under "A and B are equally good" each such seed goes either way
    with probability 1/2, so this is the binomial sign test on only_a of only_a + only_b.
    1.0 when no seed differs. Raises ValueError for a negative count.

    Source: Q. McNemar, "Note on the sampling error of the difference between correlated
    proportions or percentages", Psychometrika 12 (1947), 153-157 (its exact form).
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be >= 0, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def seed_by_seed(a: Mapping[str, Mapping[object, bool]], b: Mapping[str, Mapping[object, bool]],
                 tasks: Sequence[str]) -> str | None:
    """Two policies' per-seed outcomes ({task: {seed: succeeded}}) compared on the seeds
    both ran: 'cube_in_bowl 6 against 7 (p = 1.000); ...; all tasks 15 against 19 (p =
    0.608)', each pair the seeds only A solved against those only B solved, with the exact
    McNemar p (`paired_p_value`) per task and over all of them. None when either lacks a
    task's per-seed outcomes (results kept before they were recorded) or the two share no
    seed of a task: nothing was compared there."""
    cells, total_a, total_b = [], 0, 0
    for task in tasks:
        seeds_a, seeds_b = a.get(task) or {}, b.get(task) or {}
        common = seeds_a.keys() & seeds_b.keys()
        if not common:
            return None
        only_a = sum(bool(seeds_a[s]) and not seeds_b[s] for s in common)
        only_b = sum(bool(seeds_b[s]) and not seeds_a[s] for s in common)
        total_a, total_b = total_a + only_a, total_b + only_b
        cells.append(f"{task} {only_a} against {only_b} (p = {paired_p_value(only_a, only_b):.3f})")
    cells.append(f"all tasks {total_a} against {total_b} (p = {paired_p_value(total_a, total_b):.3f})")
    return "; ".join(cells)
