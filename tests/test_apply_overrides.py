"""``config.apply_overrides``: Hydra's override grammar on a stored config, with key and type checks."""

import math

import pytest
from omegaconf import OmegaConf

from mmssl.config import apply_overrides
from mmssl.errors import ConfigError
from mmssl.train.schedule import linear_decay, warmup_cosine


def _cfg():
    return OmegaConf.create({"data": {"batch_size": 32, "root": "a", "ratio": 0.5, "flag": False, "pair": [1, 2]}})


def test_values_read_as_on_the_command_line():
    cfg = _cfg()
    apply_overrides(cfg, ["data.batch_size=64", "data.root='my dir/x'", "data.ratio=1", "data.flag=true",
                          "data.pair=[3,4,5]", "+data.new=null"])
    assert cfg.data.batch_size == 64 and cfg.data.root == "my dir/x" and cfg.data.ratio == 1
    assert cfg.data.flag is True and list(cfg.data.pair) == [3, 4, 5] and cfg.data.new is None


@pytest.mark.parametrize("override, message", [
    ("data.batch_sise=64", "unknown config key 'data.batch_sise'; did you mean data.batch_size"),
    ("data.batch_size=abc", "data.batch_size must be int (current value 32)"),
    ("data.flag=1", "data.flag must be bool"),
    ("~data.root", "cannot delete 'data.root'"),
    ("data.root", "write key=value"),
])
def test_bad_overrides_fail_with_one_line(override, message):
    cfg = _cfg()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(cfg, [override])
    assert cfg == _cfg()


def test_schedules():
    f = warmup_cosine(2, 10, 0.1)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0] and math.isclose(f(10), 0.1) and math.isclose(f(6), 0.55)
    g = linear_decay(4)
    assert [g(i) for i in range(4)] == [1.0, 0.75, 0.5, 0.25]
