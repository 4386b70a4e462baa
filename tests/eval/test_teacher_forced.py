"""Teacher-forced speech: the arg-max codes given the recording's past, and their judged error rate."""

import pytest
import torch

from unimoe_audio.data import Example, TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.teacher_forced import teacher_forced_codes, teacher_forced_scores
from unimoe_audio.model import GenerationConfig, TextFrontend, UniMoEAudio, UniMoEAudioModel

from ..model.conftest import ENTRIES, tiny_codec, tiny_config


@pytest.fixture(scope="module")
def api():
    torch.manual_seed(0)
    frontend = TextFrontend.fit(ENTRIES)
    return UniMoEAudio(UniMoEAudioModel(tiny_config(frontend)), frontend, tiny_codec())


@pytest.mark.parametrize("entry", ENTRIES[:2], ids=["en", "zh"])
def test_fed_its_own_greedy_output_it_predicts_that_output(api, entry):
    """Greedy generation picks each frame's arg-max given the frames it made before; teacher-forcing
    the model on those frames must give back every code (delays 0-3: the pattern is undone right)."""
    config = GenerationConfig(temperature=0.0, guidance_scale=0, max_frames=12, min_frames=12, seed=0)
    own = api.generator.run([api.request("tts", entry["text"], entry["language"], entry["speaker"])], config)[0]
    assert own.shape == (4, 12)
    assert torch.equal(teacher_forced_codes(api, Example(meta=entry, codes=own, prompt_codes=None)), own)
    other = torch.randint(0, api.codec.codebook_size, own.shape, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(teacher_forced_codes(api, Example(meta=entry, codes=other, prompt_codes=None)), other)


def test_scores_need_the_models_own_codec(api, corpus):
    """The test corpus was encoded with another codec: its tokens mean nothing to this model."""
    with pytest.raises(UniMoEError, match="another codec"):
        teacher_forced_scores(api, TokenDataset(corpus / "tokens", "validation"), per_group=1)
