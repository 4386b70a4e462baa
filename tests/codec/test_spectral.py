"""The built-in codec on real flite speech: determinism, persistence, reconstruction, bad codes."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig, load_audio, load_codec
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.spectral import multi_resolution_stft_distance

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    root = tmp_path_factory.mktemp("flite")
    waves = []
    for i, text in enumerate(SENTENCES):
        path = root / f"{i}.wav"
        subprocess.run(["flite", "-voice", ["slt", "rms", "awb"][i % 3], "-t", text, "-o", str(path)], check=True)
        waves.append(load_audio(path, 16_000))
    return waves


@pytest.fixture(scope="module")
def codec(speech):
    config = SpectralCodecConfig(num_codebooks=4, codebook_size=64, kmeans_iters=5)
    return SpectralCodec.train(iter(speech[1:]), config, progress=False)


def test_encode_shapes_and_frame_rate(codec, speech):
    wave, rate = speech[0]
    codes = codec.encode(wave, rate)
    assert codes.dtype == torch.int64 and codes.shape[:2] == (1, 4)
    assert abs(codes.shape[-1] - len(wave) / rate * 50) <= 1
    assert codes.min() >= 0 and codes.max() < 64


def test_round_trip_is_deterministic_and_closer_than_noise(codec, speech):
    wave, rate = speech[0]
    codes = codec.encode(wave, rate)
    assert torch.equal(codes, codec.encode(wave, rate))
    out = codec.decode(codes)
    assert torch.equal(out, codec.decode(codes))
    n = out.shape[-1]
    ref = wave[:n]
    noise = np.random.default_rng(0).normal(0, ref.std(), n).astype(np.float32)
    assert multi_resolution_stft_distance(ref, out[0].numpy(), 16_000) < multi_resolution_stft_distance(ref, noise, 16_000)


def test_batched_encode_matches_single(codec, speech):
    a, b = speech[0][0][:16_000], speech[1][0][:16_000]
    batch = codec.encode(np.stack([a, b]), 16_000)
    assert torch.equal(batch[1:], codec.encode(b, 16_000))


def test_a_row_decodes_alike_alone_and_in_a_batch(codec, speech):
    """Decoding is batch-invariant, to the bit: Griffin-Lim amplifies any rounding difference."""
    codes = torch.cat([codec.encode(w[:16_000], r) for w, r in speech[:3]])  # [3, K, 51]
    batch = codec.decode(codes)
    assert all(torch.equal(row, codec.decode(c[None])[0]) for row, c in zip(batch, codes))


def test_save_and_load_reproduce_codes(codec, speech, tmp_path):
    codec.save_pretrained(tmp_path / "codec")
    again = load_codec(tmp_path / "codec")
    wave, rate = speech[2]
    assert torch.equal(again.encode(wave, rate), codec.encode(wave, rate))


def test_bad_codes_and_missing_codec_raise(codec, tmp_path):
    with pytest.raises(UniMoEError, match="must lie in"):
        codec.decode(torch.full((1, 4, 10), 64))
    with pytest.raises(UniMoEError, match=r"\[B, 4, T\]"):
        codec.decode(torch.zeros(1, 3, 10, dtype=torch.long))
    with pytest.raises(UniMoEError, match="config.json is missing"):
        load_codec(tmp_path / "nothing")


def test_too_little_training_audio_is_explained(speech):
    with pytest.raises(UniMoEError, match="needs at least"):
        SpectralCodec.train(iter(speech[:1]), SpectralCodecConfig(codebook_size=1024), progress=False)


def test_codec_cli_train_encode_decode(speech, tmp_path):
    from unimoe_audio.cli.main import main
    from unimoe_audio.codec import save_audio

    for i, (wave, rate) in enumerate(speech):
        save_audio(tmp_path / "audio" / f"{i}.wav", wave, rate)
    assert main(["codec", "train", "--audio", str(tmp_path / "audio"), "--out", str(tmp_path / "codec"),
                 "--codebooks", "2", "--codebook-size", "32"]) == 0
    assert main(["codec", "encode", "--codec", str(tmp_path / "codec"), str(tmp_path / "audio" / "0.wav"),
                 "-o", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape[0] == 2
    assert main(["codec", "decode", "--codec", str(tmp_path / "codec"), str(tmp_path / "c.npy"),
                 "-o", str(tmp_path / "out.wav")]) == 0
    assert load_audio(tmp_path / "out.wav")[0].std() > 0
    assert main(["codec", "train", "--audio", str(tmp_path / "audio"), "--out", str(tmp_path / "bands"),
                 "--codebooks", "2", "--codebook-size", "32", "--quantizer", "bands"]) == 0
    assert load_codec(tmp_path / "bands").config.quantizer == "bands"
    assert main(["codec", "train", "--audio", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2


def test_audio_shorter_than_the_analysis_window_is_refused_not_crashed(corpus):
    codec = load_codec(corpus / "codec")  # n_fft 1024: the STFT needs more than 512 samples
    with pytest.raises(UniMoEError, match="shorter than the codec's analysis window"):
        codec.encode(np.full(300, 0.1, np.float32), 16_000)
    assert codec.encode(np.full(600, 0.1, np.float32), 16_000).shape[-1] == 2


def test_a_one_frame_code_file_is_refused_instead_of_an_empty_wav(corpus, tmp_path, capsys):
    from unimoe_audio.cli.main import main

    np.save(tmp_path / "one.npy", np.zeros((2, 1), np.int64))
    assert main(["codec", "decode", "--codec", str(corpus / "codec"), str(tmp_path / "one.npy"), "-o", str(tmp_path / "o.wav")]) == 2
    assert "1 frame(s), which decode to no audio" in capsys.readouterr().err and not (tmp_path / "o.wav").exists()


@pytest.fixture(scope="module")
def band_codec(speech):
    config = SpectralCodecConfig(num_codebooks=4, codebook_size=64, kmeans_iters=5, quantizer="bands")
    return SpectralCodec.train(iter(speech[1:]), config, progress=False)


def test_a_band_codebook_describes_its_band_alone(band_codec, speech):
    """Codebook k is zero outside the k-th quarter of the mel bins, and its code is the nearest code
    of that band alone (the other bands do not enter its choice)."""
    books, m = band_codec.codebooks, band_codec.config.n_mels
    for k in range(4):
        inside = torch.zeros(m, dtype=torch.bool)
        inside[k * m // 4: (k + 1) * m // 4] = True
        assert books[k][:, ~inside].abs().max() == 0 and books[k][:, inside].abs().max() > 0
    wave, rate = speech[0]
    features = band_codec.features(wave, rate)[0]  # [T, M]
    codes = band_codec.encode(wave, rate)[0]  # [K, T]
    for k in range(4):
        band = slice(k * m // 4, (k + 1) * m // 4)
        distance = torch.cdist(features[:, band], books[k][:, band])  # [T, C]
        chosen = distance.gather(1, codes[k][:, None])[:, 0]
        assert torch.allclose(chosen, distance.min(-1).values, rtol=1e-4, atol=1e-4)  # equal but for rounding ties


def test_band_codec_round_trip_saves_loads_and_sounds_like_the_input(band_codec, speech, tmp_path):
    wave, rate = speech[0]
    codes = band_codec.encode(wave, rate)
    band_codec.save_pretrained(tmp_path / "bands")
    loaded = load_codec(tmp_path / "bands")
    assert loaded.config.quantizer == "bands" and torch.equal(loaded.encode(wave, rate), codes)
    stacked = SpectralCodec(replace(loaded.config, frames_per_step=2), loaded.mean, loaded.std, loaded.codebooks)
    assert loaded.delays == (0,) * 4 and stacked.delays == (0,) * 8  # bands do not wait for one another
    out = loaded.decode(codes)[0].numpy()
    noise = np.random.default_rng(0).normal(0, wave.std(), len(out)).astype(np.float32)
    assert (multi_resolution_stft_distance(wave[: len(out)], out, 16_000)
            < multi_resolution_stft_distance(wave[: len(out)], noise, 16_000))


def test_unknown_quantizer_is_refused():
    with pytest.raises(UniMoEError, match="quantizer must be one of"):
        SpectralCodecConfig(quantizer="vq")
    with pytest.raises(UniMoEError, match="one mel bin per codebook"):
        SpectralCodecConfig(num_codebooks=16, n_mels=8, quantizer="bands")


def test_stacked_frames_are_the_same_codes_two_to_a_step(codec, speech, tmp_path):
    """frames_per_step 2: codebook k of frame j of a step sits at index 2k + j, at 25 steps/s; an
    odd last frame is repeated to fill its step; the audio decodes as from the unstacked codes."""
    stacked = SpectralCodec(replace(codec.config, frames_per_step=2), codec.mean, codec.std, codec.codebooks)
    assert (stacked.num_codebooks, stacked.frame_rate, stacked.delays) == (8, 25.0, (0, 0, 1, 1, 2, 2, 3, 3))
    assert codec.delays == (0, 1, 2, 3)
    for n in (16_000, 16_320):  # 51 mel frames (odd), 52 (even)
        wave = speech[0][0][:n]
        flat, steps = codec.encode(wave, 16_000)[0], stacked.encode(wave, 16_000)[0]  # [4, T], [8, ceil(T / 2)]
        t = flat.shape[-1]
        assert steps.shape == (8, (t + 1) // 2)
        filled = torch.cat([flat, flat[:, -1:]], dim=1) if t % 2 else flat
        assert torch.equal(steps.reshape(4, 2, -1).transpose(1, 2).reshape(4, -1), filled)
        assert torch.equal(stacked.decode(steps[None]), codec.decode(filled[None]))
    stacked.save_pretrained(tmp_path / "stacked")
    again = load_codec(tmp_path / "stacked")
    assert again.frame_rate == 25.0 and again.fingerprint() != codec.fingerprint()
    with pytest.raises(UniMoEError, match=r"\[B, 8, T\]"):
        stacked.decode(torch.zeros(1, 4, 10, dtype=torch.long))
    with pytest.raises(UniMoEError, match="frames_per_step must be at least 1"):
        SpectralCodecConfig(frames_per_step=0)


@pytest.mark.parametrize("frames_per_step", [1, 2])
def test_the_expected_frames_of_certain_codes_are_those_codes(codec, speech, frames_per_step):
    """decode_expected sums each codebook's vectors weighted by a distribution: one-hot
    distributions decode as the codes do (stacked steps too), and moving probability to other
    codes moves the audio; malformed distributions are refused."""
    stacked = SpectralCodec(replace(codec.config, frames_per_step=frames_per_step), codec.mean, codec.std,
                            codec.codebooks)
    wave, rate = speech[0]
    codes = stacked.encode(wave, rate)
    certain = torch.nn.functional.one_hot(codes, 64).float()  # [1, K·r, steps, C]
    out = stacked.decode(codes)
    assert torch.allclose(stacked.decode_expected(certain), out, atol=1e-4)
    shifted = 0.5 * certain + 0.5 * torch.nn.functional.one_hot((codes + 1) % 64, 64).float()
    moved = stacked.decode_expected(shifted)
    assert moved.shape == out.shape and (moved - out).abs().max() > 0.01
    for bad, message in [(certain[:, :-1], "distributions must be"), (certain * 2, "sum to 1"),
                         (codes, "distributions must be"), (certain.long(), "floating point"),
                         (certain[:, :, :0], "no frames")]:
        with pytest.raises(UniMoEError, match=message):
            stacked.decode_expected(bad)


def _chords(seed: int, seconds: float = 3.0, rate: int = 16_000):
    """Sustained three-note chords, a new one every half second: sounds a speech codec never heard."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.5 * rate)) / rate
    notes = [sum(np.sin(2 * np.pi * 110 * 2 ** (n / 12) * t) for n in rng.choice(36, 3, replace=False))
             for _ in range(int(seconds / 0.5))]
    return (0.2 * np.concatenate(notes)).astype(np.float32), rate


@pytest.mark.parametrize("quantizer", ["residual", "bands"])
def test_a_grown_codec_keeps_its_codes_and_codes_the_new_audio_better(speech, quantizer):
    config = SpectralCodecConfig(num_codebooks=4, codebook_size=64, kmeans_iters=5, quantizer=quantizer)
    codec = SpectralCodec.train(iter(speech[1:]), config, progress=False)
    grown = codec.extended(iter([_chords(seed) for seed in range(1, 5)]), 32, progress=False)
    assert grown.codebook_size == 96 and torch.equal(grown.codebooks[:, :64], codec.codebooks)
    assert torch.equal(grown.mean, codec.mean) and torch.equal(grown.std, codec.std)
    assert grown.extends(codec) and codec.extends(codec) and not codec.extends(grown)
    assert not grown.extends(SpectralCodec.train(iter(speech[1:]), replace(config, seed=1), progress=False))
    wave, rate = _chords(seed=0)  # chords neither codec trained on
    codes = grown.encode(wave, rate)
    assert (codes >= 64).float().mean() > 0.3  # they take the new codes
    n = min(len(codec.decode(codec.encode(wave, rate))[0]), len(grown.decode(codes)[0]))
    before = multi_resolution_stft_distance(wave[:n], codec.decode(codec.encode(wave, rate))[0, :n].numpy(), rate)
    after = multi_resolution_stft_distance(wave[:n], grown.decode(codes)[0, :n].numpy(), rate)
    assert after < before
    with pytest.raises(UniMoEError, match="at least one code"):
        codec.extended(iter(speech[1:]), 0, progress=False)


def test_codec_cli_extend(speech, tmp_path):
    from unimoe_audio.cli.main import main
    from unimoe_audio.codec import save_audio

    for i, (wave, rate) in enumerate(speech):
        save_audio(tmp_path / "speech" / f"{i}.wav", wave, rate)
    for seed in range(3):
        save_audio(tmp_path / "music" / f"{seed}.wav", *_chords(seed))
    assert main(["codec", "train", "--audio", str(tmp_path / "speech"), "--out", str(tmp_path / "codec"),
                 "--codebooks", "2", "--codebook-size", "32", "--quantizer", "bands"]) == 0
    assert main(["codec", "extend", "--codec", str(tmp_path / "codec"), "--audio", str(tmp_path / "music"),
                 "--codes", "16", "--out", str(tmp_path / "grown")]) == 0
    grown = load_codec(tmp_path / "grown")
    assert grown.codebook_size == 48 and grown.extends(load_codec(tmp_path / "codec"))
    assert main(["codec", "extend", "--codec", str(tmp_path / "codec"), "--audio", str(tmp_path / "music"),
                 "--codes", "0", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
