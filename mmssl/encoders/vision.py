"""Vision encoders: a small conv net, torchvision ResNet-18 and open_clip vision towers.

All take images as (B, C, H, W) floats in [0, 1] and normalise them internally (``mean``/``std``),
so augmentations and datasets never need to know which encoder follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from mmssl.encoders.base import ImageEncoder, open_clip_config
from mmssl.encoders.conv import crop_dead_taps
from mmssl.errors import ConfigError
from mmssl.registry import ENCODERS
from mmssl.types import IMAGE, EncoderOutput


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@ENCODERS.register("convnet", modalities=(IMAGE,))
class ConvNet(ImageEncoder):
    """Small VGG-style conv net for 8×8–64×64 images: three stages (width, 2·width, 4·width), global pool.

    Stage 1 keeps the resolution; stages 2 and 3 halve it, and further stride-2 stages are added for
    inputs above 32×32 (``extra_stages``). tokens: the last feature map, (B, H'·W', dim).
    """

    def __init__(self, in_channels: int = 1, width: int = 32, extra_stages: int = 0,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.25):
        super().__init__()
        self._set_norm(in_channels, mean, std)
        widths = [width, 2 * width, 4 * width] + [4 * width] * extra_stages
        strides = [1, 2, 2] + [2] * extra_stages
        blocks, cin = [], in_channels
        for w, s in zip(widths, strides):
            blocks.append(_conv_block(cin, w, s))
            cin = w
        self.features = crop_dead_taps(nn.Sequential(*blocks))
        self.dim = cin

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        fmap = self.features(self.normalise(x))
        tokens = rearrange(fmap, "b c h w -> b (h w) c")
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)


@ENCODERS.register("resnet18", modalities=(IMAGE,))
class ResNet18(ImageEncoder):
    """torchvision ResNet-18 without its classifier; ``cifar_stem`` swaps in a 3×3 stride-1 stem, no max-pool.

    Its convolutions skip the kernel taps that read only padding at the size they are called with
    (``mmssl.encoders.conv``): the same network and ``state_dict``, 1.6–1.8× faster in bf16 at 32×32 input.

    tokens: layer4's feature map, (B, H'·W', 512).
    """

    def __init__(self, in_channels: int = 3, cifar_stem: bool = True, weights: str | None = None,
                 mean: float | list[float] = (0.4914, 0.4822, 0.4465),
                 std: float | list[float] = (0.247, 0.243, 0.261)):
        import torchvision  # imported here: torchvision pulls in torch._dynamo, seconds of start-up

        super().__init__()
        if in_channels != 3 and isinstance(mean, Sequence):
            mean, std = 0.5, 0.25
        self._set_norm(in_channels, mean, std)
        net = torchvision.models.resnet18(weights=None)
        if weights:  # torchvision ImageNet layout; the classifier is dropped below
            state = {k: v for k, v in _load_local_weights(weights).items() if not k.startswith("fc.")}
            net.load_state_dict(state, strict=False)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.net = crop_dead_taps(net)  # at 32×32 input layer3's 2×2 and layer4's 1×1 maps: matmuls
        self.dim = 512

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(self.normalise(x)))))
        fmap = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        tokens = rearrange(fmap, "b c h w -> b (h w) c")
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)


@ENCODERS.register("open_clip_vision", modalities=(IMAGE,))
class OpenCLIPVision(ImageEncoder):
    """An open_clip vision tower by architecture name (``arch="ViT-B-32"``) or a small custom config.

    ``config`` (used when ``arch`` is None) is an open_clip ``CLIPVisionCfg`` dict, e.g.
    ``{image_size: 32, patch_size: 4, width: 128, layers: 4, heads: 4}``; ``embed_dim`` is the pooled
    size. Weights come only from a local file (``weights``), never from a hub. tokens: patch tokens
    mapped through the tower's output projection, (B, N, dim).
    """

    def __init__(self, arch: str | None = None, config: dict | None = None, embed_dim: int = 128,
                 in_channels: int = 3, weights: str | None = None,
                 mean: float | list[float] = (0.48145466, 0.4578275, 0.40821073),
                 std: float | list[float] = (0.26862954, 0.26130258, 0.27577711)):
        super().__init__()
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        if in_channels not in (1, 3):
            raise ConfigError(f"open_clip_vision reads 1- or 3-channel images, got in_channels={in_channels}")
        self._set_norm(3, mean, std)  # grey inputs are repeated to 3 channels before the tower
        self.in_channels = in_channels
        if arch is not None:
            model_cfg = open_clip_config(arch)
            embed_dim, vision_cfg = model_cfg["embed_dim"], model_cfg["vision_cfg"]
        else:
            vision_cfg = dict(image_size=32, patch_size=4, width=128, layers=4, head_width=32) | dict(config or {})
        try:
            self.visual = _build_vision_tower(embed_dim, CLIPVisionCfg(**vision_cfg))
        except TypeError as exc:
            raise ConfigError(f"bad open_clip vision config {vision_cfg}: {exc}") from None
        if weights:
            state = _load_local_weights(weights)
            if any(k.startswith("visual.") for k in state):  # a whole CLIP checkpoint: keep the vision tower
                state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
            from mmssl.checkpoint import load_matching

            load_matching(self.visual, state, what=f"open_clip vision weights {weights}")
        if hasattr(self.visual, "output_tokens"):
            self.visual.output_tokens = True
        self.dim = embed_dim
        self.image_size = self.visual.image_size if hasattr(self.visual, "image_size") else None

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.image_size
        if size is not None:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            if tuple(x.shape[-2:]) != size:
                x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.normalise(x)

    # -- the patch protocol of mmssl.encoders.vit (MAE, I-JEPA, data2vec), for plain ViT towers ----------------
    def _patch_tower(self):
        v = self.visual
        plain = (getattr(v, "attn_pool", None) is None and not getattr(v, "final_ln_after_pool", False)
                 and isinstance(getattr(v, "conv1", None), nn.Conv2d) and getattr(v, "class_embedding", None) is not None)
        if not plain:
            raise ConfigError("open_clip_vision runs on a subset of patches only for plain ViT towers (class token, "
                              "no attentional pooling); use encoder=vit_tiny")
        return v

    @property
    def patch_dim(self) -> int:
        return 3 * self._patch_tower().conv1.kernel_size[0] * self._patch_tower().conv1.kernel_size[1]

    @property
    def token_width(self) -> int:
        """Width of the patch embeddings ``embed`` returns (the tower's width; ``dim`` is after the projection)."""
        return self._patch_tower().conv1.out_channels

    def embed(self, x: torch.Tensor):
        """Images → ``PatchEmbedding`` (class token left out; ``transform`` adds it back); patches are the
        normalised 3-channel pixels, ``(p q c)`` per patch."""
        from mmssl.encoders.vit import PatchEmbedding

        v = self._patch_tower()
        self.check_input(x)
        x = self._prepare(x)
        fmap = v.conv1(x)  # (B, width, gh, gw)
        p, q = v.conv1.kernel_size
        patches = rearrange(x[..., : fmap.shape[2] * p, : fmap.shape[3] * q], "b c (h p) (w q) -> b (h w) (p q c)",
                            p=p, q=q)
        pos = v.positional_embedding[1:].to(fmap.dtype)[None]
        return PatchEmbedding(rearrange(fmap, "b d h w -> b (h w) d"), pos, patches, tuple(fmap.shape[2:]))

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, width) position-coded patch tokens → (B, K, dim): class token prepended, ln_pre, the blocks,
        ln_post, class token dropped, output projection (as the tower's own ``tokens`` output)."""
        v = self._patch_tower()
        cls = (v.class_embedding + v.positional_embedding[0]).to(tokens.dtype).expand(len(tokens), 1, -1)
        x = v.transformer(v.ln_pre(torch.cat([cls, tokens], dim=1)))
        x = v.ln_post(x)[:, 1:]
        return x @ v.proj if v.proj is not None else x

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        out = self.visual(self._prepare(x))
        if isinstance(out, tuple):
            pooled, tokens = out
            proj = getattr(self.visual, "proj", None)
            if proj is not None and tokens.shape[-1] != pooled.shape[-1]:
                tokens = tokens @ proj
            return EncoderOutput(pooled=pooled, tokens=tokens)
        return EncoderOutput(pooled=out, tokens=None)

    def check_input(self, x: torch.Tensor) -> None:
        self.expect(x, 4, f"images (B, {self.in_channels}, H, W)", channels=self.in_channels)


def _load_local_weights(path: str) -> dict:
    """A state dict from a local ``.safetensors`` or torch file, loaded without running pickled code."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file {path!r} does not exist; pass a local path (hub downloads are not used)")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"weights file {path} is not a readable safetensors file ({exc})") from None
    from mmssl import safe_load

    # the same safe path as checkpoints: weights_only, one line, never torch's "set weights_only=False" advice
    state = safe_load.load(p.read_bytes(), f"weights file {path}", ConfigError)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state dict of tensors ({type(state).__name__}); "
                          "pass a state dict, an open_clip/torchvision checkpoint or a .safetensors file")
    return state
