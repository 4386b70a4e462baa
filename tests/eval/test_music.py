"""Music metrics on inputs with known answers."""

import librosa
import numpy as np
import pytest

from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval import music as mm

RATE = 16_000


def tone(midi: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * librosa.midi_to_hz(midi) * t) * np.hanning(t.size)).astype(np.float32)


def scale(tonic: int, steps) -> np.ndarray:
    notes = [tonic + s for s in steps]
    return np.concatenate([tone(n, 0.4) for n in notes + notes[::-1] + [tonic, tonic + 7, tonic + 4, tonic]])


def test_click_track_at_120_bpm_gives_120():
    wave = librosa.clicks(times=np.arange(0, 10, 0.5), sr=RATE, length=10 * RATE)
    assert mm.estimate_tempo(wave) == pytest.approx(120, rel=0.05)
    assert mm.tempo_matches(mm.estimate_tempo(wave), 120) and not mm.tempo_matches(90, 120)
    assert mm.tempo_matches(60.5, 120)  # half-tempo ambiguity is accepted


def test_scales_give_their_keys():
    assert mm.estimate_key(scale(60, [0, 2, 4, 5, 7, 9, 11, 12])) == "C major"
    assert mm.estimate_key(scale(57, [0, 2, 3, 5, 7, 8, 10, 12])) == "A minor"
    assert mm.normalize_key("B flat major") == "A# major" and mm.normalize_key("E- minor") == "D# minor"


def test_melody_is_solo_and_chords_are_not():
    melody = scale(60, [0, 2, 4, 5, 7])
    chords = np.concatenate([sum(tone(n, 0.5) for n in (r, r + 4, r + 7, r + 11)) for r in (60, 65, 67, 60)])
    assert mm.is_solo(melody) and not mm.is_solo(chords)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_grows_with_difference():
    a = mm.set_embedding([scale(60, [0, 2, 4, 5, 7, 9, 11, 12]), scale(62, [0, 2, 4, 5, 7, 9, 11, 12])])
    b = mm.set_embedding([scale(57, [0, 2, 3, 5, 7, 8, 10, 12]) * 0.1])
    assert a.shape[1] == mm.EMBED_DIM
    assert mm.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert mm.frechet_distance(a, b) > 1.0
    with pytest.raises(UniMoEError, match="at least 2"):
        mm.frechet_distance(a[:1], b)
