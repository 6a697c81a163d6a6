"""The tone helpers that the test phone relies on to say what it heard."""

from __future__ import annotations

import math
import random

import pytest

from tests.support.audio import (
    from_u8,
    goertzel_power,
    rms,
    sine,
    to_u8,
    tone_ratio,
)


def test_a_1khz_tone_is_detected_at_1khz() -> None:
    tone = sine(1000, 8000, level=0.5)

    assert tone_ratio(tone, 1000) > 0.99


def test_a_1khz_tone_survives_the_8_bit_encoding() -> None:
    tone = from_u8(to_u8(sine(1000, 8000, level=0.5)))

    assert tone_ratio(tone, 1000) > 0.99
    assert rms(tone) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_a_1khz_tone_is_not_detected_at_other_frequencies() -> None:
    tone = sine(1000, 8000, level=0.5)

    for other in (400, 950, 1050, 1500, 2000):
        assert tone_ratio(tone, other) < 0.01, other


def test_another_tone_is_not_taken_for_1khz() -> None:
    tone = sine(1500, 8000, level=0.5)

    assert tone_ratio(tone, 1000) < 0.01


def test_silence_has_no_tone_and_no_level() -> None:
    silence = from_u8(bytes([128]) * 8000)

    assert rms(silence) == 0.0
    assert tone_ratio(silence, 1000) == 0.0
    assert goertzel_power(silence, 1000) == 0.0


def test_noise_holds_little_power_at_1khz() -> None:
    noise_source = random.Random(7)
    noise = [noise_source.uniform(-0.5, 0.5) for _ in range(8000)]

    assert tone_ratio(noise, 1000) < 0.01


def test_a_tone_under_noise_is_still_found() -> None:
    noise_source = random.Random(7)
    tone = sine(1000, 8000, level=0.5)
    mixed = [s + noise_source.uniform(-0.1, 0.1) for s in tone]

    assert tone_ratio(mixed, 1000) > 0.9


def test_goertzel_power_of_a_sine_is_its_mean_power() -> None:
    tone = sine(1000, 8000, level=0.4)

    assert goertzel_power(tone, 1000) == pytest.approx(0.4**2 / 2, rel=1e-3)
    assert goertzel_power(tone, 1000) == pytest.approx(rms(tone) ** 2, rel=1e-3)


def test_frames_generated_one_by_one_form_one_continuous_tone() -> None:
    frames = [sine(1000, 160, start=160 * i) for i in range(50)]
    joined = [s for frame in frames for s in frame]

    assert joined == pytest.approx(sine(1000, 8000))


def test_encoding_clips_out_of_range_samples() -> None:
    assert to_u8([-2.0, 0.0, 2.0]) == bytes([0, 128, 255])


def test_nothing_measures_as_nothing() -> None:
    assert rms([]) == 0.0
    assert goertzel_power([], 1000) == 0.0
    assert tone_ratio([], 1000) == 0.0
