import pytest
import torch

from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS


@pytest.mark.parametrize("size", [8, 32, 64])
def test_convnet_shapes(size):
    enc = ENCODERS.build("convnet", in_channels=3, width=4)
    out = enc(torch.rand(2, 3, size, size))
    assert out.pooled.shape == (2, enc.dim) == (2, 16)
    assert out.tokens.shape == (2, (size // 4) ** 2, 16)


def test_resnet18_cifar_stem_and_imagenet_stem():
    enc = ENCODERS.build("resnet18", cifar_stem=True)
    out = enc(torch.rand(2, 3, 32, 32))
    assert out.pooled.shape == (2, 512) and out.tokens.shape == (2, 16, 512)
    enc = ENCODERS.build("resnet18", cifar_stem=False, in_channels=1)
    assert enc(torch.rand(1, 1, 64, 64)).tokens.shape == (1, 4, 512)


def test_open_clip_custom_tower_and_local_weights(tmp_path):
    enc = ENCODERS.build("open_clip_vision", config={"image_size": 8, "patch_size": 2, "width": 32, "layers": 1,
                                                     "head_width": 16}, embed_dim=24, in_channels=1)
    out = enc(torch.rand(3, 1, 8, 8))
    assert out.pooled.shape == (3, 24) and out.tokens.shape == (3, 16, 24)
    path = tmp_path / "w.pt"
    torch.save(enc.visual.state_dict(), path)
    again = ENCODERS.build("open_clip_vision", config={"image_size": 8, "patch_size": 2, "width": 32, "layers": 1,
                                                       "head_width": 16}, embed_dim=24, in_channels=1, weights=str(path))
    x = torch.rand(2, 1, 8, 8)
    enc.eval(), again.eval()
    assert torch.equal(enc(x).pooled, again(x).pooled)


def test_open_clip_unknown_arch_and_missing_weights():
    with pytest.raises(ConfigError, match="did you mean"):
        ENCODERS.build("open_clip_vision", arch="ViT-B-33")
    with pytest.raises(ConfigError, match="does not exist"):
        ENCODERS.build("open_clip_vision", weights="/nonexistent.pt")


def test_wrong_image_shape_is_one_line():
    enc = ENCODERS.build("convnet", in_channels=1, width=4)
    with pytest.raises(ShapeError) as err:
        enc(torch.rand(2, 3, 8, 8))
    assert "(B, 1, H, W)" in str(err.value) and "(2, 3, 8, 8)" in str(err.value) and "\n" not in str(err.value)
