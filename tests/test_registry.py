import inspect

import pytest

from mmssl.errors import ConfigError
from mmssl.registry import ENCODERS, OBJECTIVES, Registry


def test_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown objective 'simcl'.*did you mean 'simclr'"):
        OBJECTIVES.get("simcl")


def test_unknown_keyword_names_key_and_accepted():
    with pytest.raises(ConfigError, match=r"no option 'widht' \(did you mean 'width'\?\); accepted: in_channels, width, extra_stages"):
        ENCODERS.build("convnet", widht=3)


def test_ill_typed_keyword_is_refused():
    with pytest.raises(ConfigError, match=r"option 'width' must be int, got 'big'"):
        ENCODERS.build("convnet", width="big")
    with pytest.raises(ConfigError, match=r"must be int, got True"):
        ENCODERS.build("convnet", width=True)


def test_missing_required_and_double_registration():
    reg = Registry("thing")

    @reg.register("a", modalities=("image",))
    class A:
        """An A."""

        def __init__(self, size: int):
            self.size = size

    with pytest.raises(ConfigError, match="needs option"):
        reg.build("a")
    assert reg.build("a", size=3).size == 3
    assert reg.get("a").doc == "An A." and reg.get("a").modalities == ("image",)
    reg.register("a")(A)  # the same class again (a re-imported module) is fine

    class B:
        pass

    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("a")(B)


def test_list_cli_prints_every_objective(capsys):
    from mmssl.cli import main

    assert main(["list", "objectives"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:] if line.strip()}
    assert rows["simclr"] == ["image,audio,text,obs", "no"] and "NT-Xent" in out
    assert rows["cpc"][1] == "yes" and rows["spr"] == ["obs", "no"] and rows["mae"][0] == "image,audio"
    assert set(rows) == set(OBJECTIVES.names())


def test_modalities_are_declared_once_in_the_decorator():
    """The class reads the decorator's modalities and sequence; no objective repeats them in its body."""
    import ast
    from pathlib import Path

    import mmssl.objectives
    import mmssl.rl.aux

    for entry in OBJECTIVES:
        assert entry.modalities and entry.obj.modalities == entry.modalities, entry.name
        assert entry.obj.sequence == entry.sequence, entry.name
    files = [*Path(mmssl.objectives.__file__).parent.glob("*.py"), Path(mmssl.rl.aux.__file__)]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "Objective":
                targets = [t.id for s in node.body if isinstance(s, ast.Assign | ast.AnnAssign)
                           for t in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(t, ast.Name)]
                assert not {"modalities", "sequence"} & set(targets), f"{path.name}: {node.name}"


def test_list_unknown_kind(capsys):
    from mmssl.cli import main

    assert main(["list", "objectivs"]) == 2
    assert "did you mean 'objectives'" in capsys.readouterr().err


def test_parameters_follow_kwargs_to_the_base_and_stop_at_a_pass_through():
    """``**kwargs`` forwarded to ``super().__init__`` reads as the base's parameters (own defaults win);
    a ``**kwargs`` that only reaches a ``(*args, **kwargs)`` constructor accepts any key."""
    from mmssl.registry import parameters

    reg = Registry("thing")

    class Base:
        def __init__(self, size: int, *, scale: float = 1.0, mode: str = "a"):
            self.size, self.scale, self.mode = size, scale, mode

    class Middle(Base):
        def __init__(self, size: int, depth: int = 2, **common):
            super().__init__(size, **common)

    @reg.register("leaf")
    class Leaf(Middle):
        def __init__(self, size: int, mode: str = "b", **common):
            super().__init__(size, mode=mode, **common)

    @reg.register("open")
    class Open(dict):  # dict's constructor is a pass-through
        def __init__(self, width: int = 1, **kwargs):
            super().__init__(**kwargs)

    assert [(p.name, p.default) for p in parameters(Leaf)] == [
        ("size", inspect.Parameter.empty), ("mode", "b"), ("depth", 2), ("scale", 1.0)]
    assert not hasattr(Leaf.__init__, "__signature__")  # read, not rewritten
    assert reg.build("leaf", 3, scale=2.0, depth=1).scale == 2.0
    with pytest.raises(ConfigError, match=r"no option 'scal' \(did you mean 'scale'\?\)"):
        reg.build("leaf", 3, scal=2.0)
    with pytest.raises(ConfigError, match=r"option 'scale' must be float, got 'big'"):
        reg.build("leaf", 3, scale="big")
    assert reg.build("open", colour="red")["colour"] == "red"
    assert parameters(Open)[-1].kind is inspect.Parameter.VAR_KEYWORD
