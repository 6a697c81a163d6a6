"""Small signal helpers for the test phone: make tones, measure what arrived.

Audio here is what pyVoIP exchanges with its RTP clients: 8-bit unsigned
linear PCM at 8 kHz, one byte per sample, 128 meaning silence. The helpers
work on plain lists of floats in [-1, 1] so that they stay readable and need
nothing beyond the standard library at these sizes (a second is 8000 samples)::

    tone = sine(1000, 8000, level=0.5)
    assert tone_ratio(from_u8(to_u8(tone)), 1000) > 0.9
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SAMPLE_RATE = 8000
# A signal whose RMS is below this (about -60 dBFS) counts as silence: the
# ratio of a tone to the total power means nothing when there is no power.
SILENCE_RMS = 0.001


def sine(
    frequency: float,
    count: int,
    level: float = 0.5,
    sample_rate: int = SAMPLE_RATE,
    start: int = 0,
) -> list[float]:
    """`count` samples of a sine of peak `level`, beginning at sample `start`.

    Passing the running sample index as `start` keeps the phase continuous
    from one frame to the next, so frames can be generated one at a time.
    """
    step = 2 * math.pi * frequency / sample_rate
    return [level * math.sin(step * (start + i)) for i in range(count)]


def to_u8(samples: Sequence[float]) -> bytes:
    """Encode samples in [-1, 1] as 8-bit unsigned PCM, clipping the excess."""
    return bytes(max(0, min(255, round(128 + 127 * s))) for s in samples)


def from_u8(data: bytes) -> list[float]:
    """Decode 8-bit unsigned PCM into samples in [-1, 1]."""
    return [(b - 128) / 128 for b in data]


def rms(samples: Sequence[float]) -> float:
    """Root mean square of the samples; 0.0 for no samples."""
    if not samples:
        return 0.0
    return math.sqrt(math.fsum(s * s for s in samples) / len(samples))


def goertzel_power(
    samples: Sequence[float], frequency: float, sample_rate: int = SAMPLE_RATE
) -> float:
    """Mean power of the component of `samples` at `frequency`.

    Scaled so that a sine of peak A at exactly that frequency gives A**2 / 2,
    its own mean power, which makes the result comparable with `rms` squared.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / sample_rate)
    previous = before_previous = 0.0
    for sample in samples:
        previous, before_previous = (
            sample + coefficient * previous - before_previous,
            previous,
        )
    magnitude_squared = (
        previous * previous
        + before_previous * before_previous
        - coefficient * previous * before_previous
    )
    return 2 * magnitude_squared / (n * n)


def tone_ratio(
    samples: Sequence[float],
    frequency: float,
    sample_rate: int = SAMPLE_RATE,
    silence: float = SILENCE_RMS,
) -> float:
    """Share of the signal's power that sits at `frequency`, from 0.0 to 1.0.

    About 1.0 for a clean tone at that frequency, near 0.0 for another tone
    or noise, and exactly 0.0 for silence (RMS below `silence`).
    """
    total = rms(samples)
    if total < silence:
        return 0.0
    share = goertzel_power(samples, frequency, sample_rate) / (total * total)
    return min(1.0, share)
