"""The measured audio and RTCP feedback sizes of a call (zmesh/shaping/audio.py, D59)."""

import json
from importlib import resources

import pytest

from zmesh.rng import DeterministicRng
from zmesh.shaping.audio import AudioProfile


def test_the_shipped_profile_is_a_call_s_audio() -> None:
    profile = AudioProfile.measured()
    assert list(profile.audio_size) == sorted(profile.audio_size)
    # the calls' Opus datagrams: p10-p90 about 41-132 bytes; feedback ~16 a second
    n = len(profile.audio_size)
    assert 30 <= profile.audio_size[n // 10] <= 60 and 100 <= profile.audio_size[9 * n // 10] <= 160
    assert 5 <= profile.feedback_rate <= 40 and max(profile.feedback_size) < 200
    rng = DeterministicRng(b"k" * 32, b"audio")
    draws = [profile.audio_payload(rng, 30) for _ in range(2000)]
    assert min(draws) >= 1 and max(draws) <= max(profile.audio_size) - 30
    assert len(set(draws)) > 10
    assert all(profile.feedback_payload(rng, 14) >= 1 for _ in range(100))


def test_a_small_overhead_floor_and_malformed_profiles() -> None:
    profile = AudioProfile((5,), (3,), 1.0)
    rng = DeterministicRng(b"k" * 32, b"audio")
    assert profile.audio_payload(rng, 30) == 1 and profile.feedback_payload(rng, 14) == 1
    text = resources.files("zmesh.shaping").joinpath("audio_profile.json").read_text()
    doc = json.loads(text)
    for bad in (
        "[]",
        "{",
        json.dumps(doc | {"audio_size": []}),
        json.dumps(doc | {"feedback_size": [0]}),
        json.dumps(doc | {"audio_size": [1, 2000]}),
        json.dumps(doc | {"feedback_rate": -1}),
        json.dumps(doc | {"feedback_rate": "x"}),
        json.dumps({k: v for k, v in doc.items() if k != "feedback_rate"}),
    ):
        with pytest.raises(ValueError):
            AudioProfile.from_json(bad)


def test_audio_gaps_jitter_around_20_ms_as_the_calls_did() -> None:
    profile = AudioProfile.measured()
    rng = DeterministicRng(b"g" * 32, b"audio")
    gaps = [profile.audio_interval(rng) for _ in range(5000)]
    assert 0.018 <= sum(gaps) / len(gaps) <= 0.023  # ~50 a second
    assert min(gaps) < 0.005 and max(gaps) > 0.04  # not a clock
    assert AudioProfile((41,), (42,), 1.0).audio_interval(rng) == 0.02
    with pytest.raises(ValueError):
        AudioProfile((41,), (42,), 1.0, audio_gap=(-0.01,))
