"""DigitGrid: go to the digit you are told, where tiles show handwritten digits and the instruction is
text or speech.

A ``size``×``size`` grid holds ``num_tiles`` tiles, each showing a handwritten digit image (distinct
classes) and an agent. The instruction names one of the tiles' digits: as open_clip BPE token ids of a
sentence ("go to the seven"), as a spoken digit (waveform), or not at all (``instruction="none"``, a
sanity check: an agent without it cannot beat chance). Moving onto the instructed tile gives reward
``1 - 0.9·t/max_steps`` and success; moving onto another tile ends the episode with 0.

Observations (a Dict space):
- ``image``: (2, 8·size, 8·size) uint8 — channel 0 the digit tiles, channel 1 the agent's cell (``view=pixels``),
  or ``grid``: (size, size, 2) int64 — digit class + 1 (0 = empty) and the agent mask (``view=symbolic``).
- ``instruction``: (context_length,) int64 token ids, or (samples,) float32 waveform at 8 kHz.

Images and voices come from the tri-modal digits data split with ``data_seed`` (the seed of the
cross-modal pretraining run whose encoders the agent uses): ``split=train`` for training, ``test`` for
evaluation with digit images and, for speech, voices never seen in pretraining or RL training.
"""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import numpy as np
from gymnasium import spaces

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right (row, col)
TILE = 8


@lru_cache(maxsize=4)
def _trimodal(seed: int):
    from mmssl.registry import DATASETS

    return DATASETS.build("trimodal_digits", seed=seed)


def digit_images(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 8, 8) digit images and labels of the tri-modal digits split with this seed, i.e. the
    images `mmssl pretrain data=trimodal_digits seed=<seed>` trains on (``train``) or never sees (``test``)."""
    part = _trimodal(seed).train if split == "train" else _trimodal(seed).test
    return part.data["image"][:, 0].numpy(), part.labels.numpy()


def spoken_digits(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, samples) spoken digits (8 kHz) and labels of the same split (test = unseen voices)."""
    part = _trimodal(seed).train if split == "train" else _trimodal(seed).test
    return part.data["audio"].numpy().astype(np.float32), part.labels.numpy()


@lru_cache(maxsize=8)
def instruction_tokens(context_length: int, template: str) -> np.ndarray:
    """(10, context_length) token ids of the instruction for each digit."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context_length)
    return tokenizer([template.format(word) for word in DIGIT_WORDS]).numpy().astype(np.int64)


class DigitGridEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, size: int = 5, num_tiles: int = 3, max_steps: int | None = None,
                 instruction: str = "text", view: str = "pixels", split: str = "train",
                 context_length: int = 16, template: str = "go to the {}", data_seed: int = 0,
                 render_mode: str | None = None):
        if instruction not in ("text", "audio", "none"):
            raise ValueError(f"instruction must be text, audio or none, got {instruction!r}")
        if view not in ("pixels", "symbolic"):
            raise ValueError(f"view must be pixels or symbolic, got {view!r}")
        if not 1 <= num_tiles <= min(10, size * size - 1):
            raise ValueError(f"num_tiles must be in [1, {min(10, size * size - 1)}] for a {size}×{size} grid")
        self.size, self.num_tiles, self.instruction, self.view, self.split = size, num_tiles, instruction, view, split
        self.max_steps = max_steps or 4 * size
        self.render_mode = render_mode
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, got {split!r}")
        self.images, self.image_labels = digit_images(split, data_seed)
        self._by_class = [np.flatnonzero(self.image_labels == c) for c in range(10)]
        obs = {}
        if view == "pixels":
            obs["image"] = spaces.Box(0, 255, (2, TILE * size, TILE * size), np.uint8)
        else:
            obs["grid"] = spaces.Box(0, 10, (size, size, 2), np.int64)
        if instruction == "text":
            self.tokens = instruction_tokens(context_length, template)
            obs["instruction"] = spaces.Box(0, 49407, (context_length,), np.int64)
        elif instruction == "audio":
            self.clips, self.clip_labels = spoken_digits(split, data_seed)
            self._clips_by_class = [np.flatnonzero(self.clip_labels == c) for c in range(10)]
            obs["instruction"] = spaces.Box(-1.0, 1.0, (self.clips.shape[1],), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        cells = rng.choice(self.size * self.size, size=self.num_tiles + 1, replace=False)
        self.agent = np.array(divmod(int(cells[0]), self.size))
        self.tile_cells = [tuple(divmod(int(c), self.size)) for c in cells[1:]]
        self.tile_digits = rng.choice(10, size=self.num_tiles, replace=False)
        self.tile_images = [int(rng.choice(self._by_class[d])) for d in self.tile_digits]
        self.target = int(self.tile_digits[rng.integers(self.num_tiles)])
        if self.instruction == "audio":
            self.clip = int(rng.choice(self._clips_by_class[self.target]))
        self.steps = 0
        return self._obs(), self._info(success=False)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self.steps += 1
        self.agent = np.clip(self.agent + MOVES[int(action)], 0, self.size - 1)
        reward, terminated, success = 0.0, False, False
        cell = (int(self.agent[0]), int(self.agent[1]))
        if cell in self.tile_cells:
            terminated = True
            success = int(self.tile_digits[self.tile_cells.index(cell)]) == self.target
            reward = 1.0 - 0.9 * self.steps / self.max_steps if success else 0.0
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, self._info(success)

    def _info(self, success: bool) -> dict:
        return {"success": float(success), "target": self.target}

    def _obs(self) -> dict:
        obs = {}
        if self.view == "pixels":
            canvas = np.zeros((2, TILE * self.size, TILE * self.size), np.uint8)
            for (r, c), idx in zip(self.tile_cells, self.tile_images):
                canvas[0, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = self.images[idx]
            r, c = self.agent
            canvas[1, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = 255
            obs["image"] = canvas
        else:
            grid = np.zeros((self.size, self.size, 2), np.int64)
            for (r, c), d in zip(self.tile_cells, self.tile_digits):
                grid[r, c, 0] = d + 1
            grid[self.agent[0], self.agent[1], 1] = 1
            obs["grid"] = grid
        if self.instruction == "text":
            obs["instruction"] = self.tokens[self.target].copy()
        elif self.instruction == "audio":
            obs["instruction"] = np.clip(self.clips[self.clip], -1.0, 1.0)
        return obs

    def render(self):
        """RGB frame: digits in white, the agent's cell tinted red, the target outlined in green."""
        grid = self._obs()["image"] if self.view == "pixels" else None
        if grid is None:
            saved, self.view = self.view, "pixels"
            grid = self._obs()["image"]
            self.view = saved
        rgb = np.repeat(grid[0][..., None], 3, axis=2)
        rgb[..., 0] = np.maximum(rgb[..., 0], grid[1] // 2)
        return rgb


def register() -> None:
    if "mmssl/DigitGrid-v0" not in gym.registry:
        gym.register(id="mmssl/DigitGrid-v0", entry_point=f"{__package__}.digit_grid:DigitGridEnv")


register()
