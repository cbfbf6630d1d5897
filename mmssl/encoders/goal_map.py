"""An observation encoder for instruction-following on grids of images (the flagship DigitGrid task).

It reads a dict observation ``{"image": (B, 2, T·G, T·G), "instruction": ids or waveform}`` whose image
channel 0 holds G×G tiles of T×T pictures and channel 1 the agent's cell. Every tile is encoded by an
image encoder and the instruction by a text or audio encoder — any registry encoders, e.g. the towers of
a cross-modal pretraining run, loaded and optionally frozen — both projected into a joint space. The
cosine similarity of each tile with the instruction forms a G×G "goal map" — with its softmax over the
occupied cells, the zero-shot retrieval distribution — which, stacked with the agent and occupancy maps,
plus an in-grid mask, a small CNN turns into the state feature (by default egocentric: the maps are
shifted so that the agent sits at the centre). With cross-modally bound encoders the goal map is meaningful
before any RL; from scratch, PPO has to learn the binding from reward alone.

Only occupied cells are encoded, each distinct picture and instruction once per batch, and a frozen
tower's outputs are remembered across batches (mmssl/encoders/memo.py) — a trainable tower's too, while
it is in inference mode between updates (a rollout or an evaluation): the towers' cost stops growing
with the grid and, when frozen, with training time.

pooled: (B, dim) state feature; tokens: (B, G·G, joint_dim) tile embeddings (zero for empty cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.encoders.memo import RowMemo
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS
from mmssl.types import OBS, EncoderOutput


def _build(spec: dict) -> Encoder:
    spec = dict(spec)
    if "name" not in spec:
        raise ConfigError(f"encoder spec {spec} needs a 'name' (`mmssl list encoders`)")
    return ENCODERS.build(spec.pop("name"), **spec)


def egocentric(maps: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
    """(B, C, G, G) maps → (B, C, 2G−1, 2G−1) shifted so the agent's cell (argmax of ``agent`` (B, G·G)) is at the
    centre, zero outside the grid: "the goal is two cells to my left" reads the same wherever the agent is."""
    b, c, g_rows, g_cols = maps.shape
    r, col = agent.argmax(1).div(g_cols, rounding_mode="floor"), agent.argmax(1) % g_cols  # (B,)
    src_r = torch.arange(2 * g_rows - 1, device=maps.device)[None] - (g_rows - 1) + r[:, None]  # (B, 2G−1)
    src_c = torch.arange(2 * g_cols - 1, device=maps.device)[None] - (g_cols - 1) + col[:, None]
    valid = ((src_r >= 0) & (src_r < g_rows))[:, :, None] & ((src_c >= 0) & (src_c < g_cols))[:, None, :]
    flat = (src_r.clamp(0, g_rows - 1)[:, :, None] * g_cols + src_c.clamp(0, g_cols - 1)[:, None, :]).flatten(1)
    out = maps.flatten(2).gather(2, flat[:, None].expand(b, c, -1))
    return out.view(b, c, 2 * g_rows - 1, 2 * g_cols - 1) * valid[:, None]


@ENCODERS.register("goal_map", modalities=(OBS,))
class GoalMapEncoder(Encoder):
    """Per-tile image embeddings compared with an instruction embedding → goal map → CNN (DigitGrid agents)."""

    modality = OBS
    reads_dict = True

    def __init__(self, tile_encoder: dict | None = None, instruction_encoder: dict | None = None,
                 instruction_modality: str = "text", tile: int = 8, joint_dim: int = 64, projection_hidden: int = 128,
                 projection_layers: int = 2, dim: int = 128,
                 image_key: str = "image", instruction_key: str = "instruction", pretrained: str | None = None,
                 freeze: bool = False, egocentric: bool = True):
        super().__init__()
        self.tile, self.image_key, self.instruction_key = tile, image_key, instruction_key
        self.egocentric = egocentric
        self.tile_encoder = _build(tile_encoder or {"name": "convnet", "in_channels": 1, "width": 16})
        self.instruction_encoder = _build(instruction_encoder) if instruction_encoder else None
        self.instruction_modality = instruction_modality
        # projections shaped like the cross-modal objectives' heads (`bind`, `clip`), so a run's joint space loads
        proj = lambda d: mlp(d, projection_hidden, joint_dim, projection_layers, batch_norm=False)  # noqa: E731
        self.tile_proj = proj(self.tile_encoder.dim)
        self.instruction_proj = proj(self.instruction_encoder.dim) if self.instruction_encoder else None
        self.logit_scale = nn.Parameter(torch.tensor(10.0).log())
        self.map_net = nn.Sequential(
            nn.Conv2d(5, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(32 * 49, dim), nn.ReLU())
        self.dim = dim
        self.memo_tiles, self.memo_instruction = RowMemo(), RowMemo()  # new weights → forget what was remembered
        self.register_load_state_dict_post_hook(lambda module, _keys: module.forget())
        if pretrained:
            self.load_pretrained(pretrained)
        if freeze:
            frozen = [self.tile_encoder, self.tile_proj] + ([self.instruction_encoder, self.instruction_proj]
                                                            if self.instruction_encoder else [])
            for module in frozen:
                module.requires_grad_(False)
                module.eval()
            self.frozen = frozen
        else:
            self.frozen = []

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen:  # frozen towers keep their BatchNorm statistics
            module.eval()
        return self

    def _remember(self) -> bool:
        """Whether tower outputs may be remembered: frozen towers always; trainable ones in inference (a
        rollout, an evaluation) while their weights are unchanged — any in-place update (an optimiser or
        momentum step, a load) bumps a parameter's version counter and the memo starts over."""
        if self.frozen:
            return True
        if self.training or torch.is_grad_enabled():
            return False
        versions = tuple(p._version for p in self.parameters())
        if versions != getattr(self, "_versions", None):
            self.forget()
            self._versions = versions
        return True

    def forget(self) -> None:
        self.memo_tiles.clear()
        self.memo_instruction.clear()

    def load_pretrained(self, path: str) -> None:
        """Tile/instruction towers (and joint projections when shapes fit) from a pretraining run or checkpoint."""
        from mmssl import checkpoint

        state = checkpoint.find(path)[2]["model"]
        checkpoint.load_matching(self.tile_encoder, checkpoint.encoder_weights(state, "image"), what="image tower")
        if self.instruction_encoder is not None:
            checkpoint.load_matching(self.instruction_encoder,
                                     checkpoint.encoder_weights(state, self.instruction_modality),
                                     what=f"{self.instruction_modality} tower")
        for modality, proj in (("image", self.tile_proj), (self.instruction_modality, self.instruction_proj)):
            weights = {k.split(f"projections.{modality}.", 1)[1]: v for k, v in state.items()
                       if k.startswith("objectives.") and f".projections.{modality}." in k}
            if proj is not None and weights:  # the joint space of a cross-modal run (bind / clip)
                checkpoint.load_matching(proj, weights, what=f"{modality} projection head")
        scale = [v for k, v in state.items() if k.startswith("objectives.") and k.endswith(
            (f"log_scales.image_{self.instruction_modality}", f"log_scales.{self.instruction_modality}_image"))]
        if scale:  # the pair's learned temperature: the goal map's softmax is the run's zero-shot retrieval
            with torch.no_grad():
                self.logit_scale.copy_(scale[0])

    def check_input(self, x) -> None:
        if not isinstance(x, dict) or self.image_key not in x:
            raise ShapeError(f"goal_map reads a dict observation with key {self.image_key!r} "
                             f"(B, 2, {self.tile}·G, {self.tile}·G); got {type(x).__name__}"
                             f"{sorted(x) if isinstance(x, dict) else ''}")
        img = x[self.image_key]
        if img.ndim != 4 or img.shape[1] != 2 or img.shape[-1] % self.tile or img.shape[-2] % self.tile:
            raise ShapeError(f"goal_map expects {self.image_key!r} as (B, 2, H, W) with H, W multiples of "
                             f"{self.tile}; got {tuple(img.shape)}")

    def _embed_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """(K, 1, t, t) pictures (uint8 or [0, 1]) → (K, joint_dim) unit-norm joint-space embeddings."""
        x = tiles.float()
        if tiles.dtype == torch.uint8 or (x.numel() and x.max() > 1.5):
            x = x / 255.0
        return F.normalize(self.tile_proj(self.tile_encoder(x).pooled), dim=-1)

    def _embed_instruction(self, instruction: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.instruction_proj(self.instruction_encoder(instruction).pooled), dim=-1)

    def encode(self, obs: dict) -> EncoderOutput:
        raw = obs[self.image_key]
        b, t = raw.shape[0], self.tile
        g_rows, g_cols = raw.shape[-2] // t, raw.shape[-1] // t
        tiles = rearrange(raw[:, :1], "b c (gh t1) (gw t2) -> (b gh gw) c t1 t2", t1=t, t2=t)
        occupied = tiles.flatten(1).amax(-1) > 0  # (B·G²,) cells showing a picture
        # Only occupied tiles are encoded, each distinct picture once (frozen towers: once per run);
        # empty cells get a zero embedding, as they are masked out of the goal map anyway.
        cells = occupied.nonzero().squeeze(1)
        remember = self._remember()
        emb = self.memo_tiles(self._embed_tiles, tiles[cells], remember=remember)
        tile_emb = emb.new_zeros(len(tiles), emb.shape[-1]).index_copy(0, cells, emb)
        tile_emb = rearrange(tile_emb, "(b n) d -> b n d", b=b)
        occupied = rearrange(occupied.float(), "(b n) -> b n", b=b)
        mask = raw[:, 1].float()
        if raw.dtype == torch.uint8 or mask.max() > 1.5:
            mask = mask / 255.0
        agent = rearrange(mask, "b (gh t1) (gw t2) -> b (gh gw) (t1 t2)", t1=t, t2=t).mean(-1)
        if self.instruction_encoder is not None and self.instruction_key in obs:
            goal = self.memo_instruction(self._embed_instruction, obs[self.instruction_key], remember=remember)
            logits = torch.einsum("bnd,bd->bn", tile_emb, goal) * self.logit_scale.exp().clamp(max=100)
            # channel 1: scaled cosine similarity; channel 2: the zero-shot retrieval distribution over the
            # occupied cells (softmax at the pair's temperature) — near one-hot on the named tile when bound
            similarity = logits * occupied / 10
            goal_prob = torch.softmax(logits.masked_fill(occupied == 0, float("-inf")), dim=1).nan_to_num(0.0)
        else:
            similarity = goal_prob = torch.zeros_like(occupied)
        maps = rearrange(torch.stack([similarity, goal_prob, agent, occupied, torch.ones_like(agent)], dim=1),
                         "b c (gh gw) -> b c gh gw", gh=g_rows, gw=g_cols)
        pooled = self.map_net(egocentric(maps, agent) if self.egocentric else maps)
        return EncoderOutput(pooled=pooled, tokens=tile_emb)
