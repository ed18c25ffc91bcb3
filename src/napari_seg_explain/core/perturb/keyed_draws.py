"""Counter-based random numbers: each value a function of (seed, stream, block key, draw index, lane) alone.

PdCR's replacement draws come from here, so the draws of a block depend only on the seed and where the block
is, never on which other blocks a run screens or estimates, in what order, or for how many RoIs: a block's
``j``-th draw is the same in a one-RoI run, a run of several RoIs, adaptive N (a prefix), hierarchical or
exact screening. numpy and torch offer counter-based generators only as whole streams (Philox with one key
per generator), not one value per element of an array of keys, so the SplitMix64 finaliser (Steele, Lea &
Flood 2014; the mixer that seeds numpy's and Java's generators) is applied here, vectorised with numpy's
wrapping uint64 arithmetic: no Python loop over blocks or draws.
"""

from __future__ import annotations

import numpy as np

#: stream ids: which stage a draw belongs to (independent streams for the same block and index)
SCREENING, ESTIMATION, COARSE_SCREENING = 0, 1, 2

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection of uint64 with full avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def keyed_uniforms(seed: int, stream: int, keys: np.ndarray, index: np.ndarray, lanes: int,
                   attempt: int = 0) -> np.ndarray:
    """``(n, lanes)`` float64 uniforms in [0, 1), element ``i`` a function of ``(seed, stream, keys[i],
    index[i], lane, attempt)`` only. ``keys``, ``index``: ``(n,)`` non-negative integers."""
    keys = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(int(seed) & _MASK) * _GAMMA + np.uint64(stream * 1024 + attempt))
        z = _mix(base ^ _mix(keys + _GAMMA))
        z = _mix(z ^ _mix(index * _GAMMA + _M1))
        lane = np.arange(1, lanes + 1, dtype=np.uint64) * _GAMMA
        z = _mix(z[:, None] + lane[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
