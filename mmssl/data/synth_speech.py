"""Synthesise the spoken-digits set: ``python -m mmssl.data.synth_speech [--out DIR] [--speakers N]``.

Each *speaker* is one synthesiser voice with its own base speed and pitch: espeak-ng (8 English accents ×
~100 voice variants) and flite (its built-in voices at two pitches). Every speaker says every digit
word ``takes`` times with a little speed/pitch jitter. Clips are trimmed of silence, resampled to
``sample_rate`` (8 kHz: telephone band, enough for digit words) and stored as 16-bit FLAC named
``{digit}_{speaker}_{take}.flac`` (the ``audio_folder`` layout), with ``manifest.csv`` listing label,
speaker, engine, voice, speed and pitch. ``--language fr|de|es`` speaks the digits in French, German or
Spanish (espeak-ng only): a folder of unseen words for transfer studies. Needs ``apt-get install
espeak-ng flite``; the committed set under ``mmssl/data/assets/spoken_digits/`` makes the dataset work
without them.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mmssl.errors import DataError

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
#: language → (the digit words 0–9, espeak-ng voices); flite speaks English only
LANGUAGES = {
    "en": (DIGIT_WORDS, ESPEAK_ACCENTS),
    "fr": (["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"], ["fr", "fr-be", "fr-ch"]),
    "de": (["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"], ["de"]),
    "es": (["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"], ["es", "es-419"]),
}
ASSET_DIR = Path(__file__).parent / "assets" / "spoken_digits"


def espeak_variants() -> list[str]:
    """Names of espeak-ng's voice variants (``+Adam``, ``+f3``, …), read from ``espeak-ng --voices=variant``."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[3] for line in out.splitlines()[1:] if len(line.split()) > 3})


def trim_silence(wave: np.ndarray, threshold: float = 0.02, pad: int = 160) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``threshold``·peak (keeping ``pad`` samples of margin)."""
    loud = np.flatnonzero(np.abs(wave) > threshold * (np.abs(wave).max() + 1e-9))
    if len(loud) == 0:
        return wave
    return wave[max(0, loud[0] - pad):loud[-1] + pad]


def _synth(job: dict, tmp: Path) -> tuple[np.ndarray, int]:
    wav = tmp / f"{job['file']}.wav"
    if job["engine"] == "espeak-ng":
        cmd = ["espeak-ng", "-v", job["voice"], "-s", str(job["speed"]), "-p", str(job["pitch"]), "-w", str(wav),
               job["word"]]
    else:  # flite: speed as duration stretch, pitch as target F0 mean in Hz
        cmd = ["flite", "-voice", job["voice"], "--setf", f"duration_stretch={150 / job['speed']:.3f}",
               "--setf", f"int_f0_target_mean={job['pitch']}", "-t", job["word"], "-o", str(wav)]
    subprocess.run(cmd, check=True, capture_output=True)
    wave, sr = sf.read(wav, dtype="float32")
    wav.unlink()
    return wave, sr


def plan(speakers: int, takes: int, seed: int, language: str = "en") -> list[dict]:
    """The clip list: ``speakers`` espeak/flite speakers × 10 digits × ``takes``, each with speed and pitch."""
    if language not in LANGUAGES:
        raise DataError(f"no digit words for language {language!r}; choose one of {', '.join(LANGUAGES)}")
    words, accents = LANGUAGES[language]
    rng = random.Random(seed)
    voices = [("espeak-ng", f"{a}+{v}") for a in accents for v in espeak_variants()]
    rng.shuffle(voices)
    has_flite = language == "en" and shutil.which("flite") is not None
    flite = [("flite", v, p) for v in FLITE_VOICES for p in (95, 170)] if has_flite else []
    chosen = [(e, v, None) for e, v in voices[:max(0, speakers - len(flite))]] + flite[:speakers]
    jobs = []
    for i, (engine, voice, pitch) in enumerate(chosen):
        speaker = f"s{i:03d}"
        base_speed = rng.randint(120, 210)
        base_pitch = pitch if pitch is not None else rng.randint(20, 80)
        for digit, word in enumerate(words):
            for take in range(takes):
                speed = int(base_speed * rng.uniform(0.9, 1.1))
                p = int(base_pitch * rng.uniform(0.9, 1.1))
                jobs.append(dict(engine=engine, voice=voice, speaker=speaker, label=digit, word=word, take=take,
                                 speed=speed, pitch=p, file=f"{digit}_{speaker}_{take}.flac"))
    return jobs


def synthesise(out: Path, speakers: int = 100, takes: int = 1, sample_rate: int = 8000, seed: int = 0,
               workers: int = 2, language: str = "en") -> list[dict]:
    """Write every clip of ``plan`` as FLAC under ``out`` plus ``manifest.csv``; returns the manifest rows."""
    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng is not installed; run `apt-get install espeak-ng flite` (or use the committed set)")
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(speakers, takes, seed, language)
    with tempfile.TemporaryDirectory() as tmp:
        def work(job):
            wave, sr = _synth(job, Path(tmp))
            wave = trim_silence(wave)
            wave = AF.resample(torch.from_numpy(wave), sr, sample_rate).numpy()
            wave = 0.9 * wave / (np.abs(wave).max() + 1e-9)  # peak-normalise: loudness is an augmentation
            sf.write(out / job["file"], wave, sample_rate, format="FLAC", subtype="PCM_16")
            return job | {"samples": len(wave)}

        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(work, jobs))
    fields = ["file", "label", "speaker", "take", "engine", "voice", "speed", "pitch", "samples"]
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    parser.add_argument("--speakers", type=int, default=100)
    parser.add_argument("--takes", type=int, default=1)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language", default="en", choices=list(LANGUAGES), help="language of the digit words")
    args = parser.parse_args(argv)
    rows = synthesise(args.out, args.speakers, args.takes, args.sample_rate, args.seed, language=args.language)
    size = sum(p.stat().st_size for p in args.out.glob("*.flac"))
    print(f"wrote {len(rows)} clips from {len({r['speaker'] for r in rows})} speakers to {args.out} "
          f"({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
