"""The spoken-digit synthesis plan (mmssl.data.synth_speech): speakers × digits × takes, words per language."""

import pytest

from mmssl.data import synth_speech
from mmssl.errors import DataError


@pytest.fixture(autouse=True)
def no_espeak(monkeypatch):  # the plan only needs espeak-ng's variant names
    monkeypatch.setattr(synth_speech, "espeak_variants", lambda: ["+f1", "+m3", "+klatt"])
    monkeypatch.setattr(synth_speech.shutil, "which", lambda name: None)  # no flite


@pytest.mark.parametrize("language, four", [("en", "four"), ("fr", "quatre"), ("de", "vier"), ("es", "cuatro")])
def test_plan_speaks_each_digit_word_per_speaker_and_take(language, four):
    jobs = synth_speech.plan(speakers=3, takes=2, seed=0, language=language)
    assert len(jobs) == 3 * 10 * 2 and len({j["file"] for j in jobs}) == len(jobs)
    assert {j["word"] for j in jobs if j["label"] == 4} == {four}
    accents = synth_speech.LANGUAGES[language][1]
    assert all(j["engine"] == "espeak-ng" and j["voice"].split("+")[0] in accents for j in jobs)
    assert jobs == synth_speech.plan(speakers=3, takes=2, seed=0, language=language)  # fixed by the seed


def test_unknown_language_fails_in_one_line():
    with pytest.raises(DataError, match="no digit words for language 'it'; choose one of en, fr, de, es"):
        synth_speech.plan(2, 1, 0, language="it")
