"""experiments/transfer_real/cut_digits.py on a tiny synthetic sheet: the folder layout image_folder reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "transfer_real" / "cut_digits.py"


def _sheet(path: Path, rows: int = 2, cols: int = 10) -> np.ndarray:
    """A rows×cols sheet of 20×20 cells; cell i is filled with 6·i + 5 (every cell recognisable)."""
    sheet = np.zeros((20 * rows, 20 * cols), dtype=np.uint8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        sheet[20 * r:20 * (r + 1), 20 * c:20 * (c + 1)] = 6 * i + 5
    Image.fromarray(sheet).save(path)
    return sheet


def test_cut_writes_one_folder_per_digit_in_sheet_order(tmp_path):
    _sheet(tmp_path / "sheet.png")  # 40×200: 20 cells, 2 consecutive cells per digit
    out = tmp_path / "digits"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--sheet", str(tmp_path / "sheet.png")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]
    for digit in range(10):
        files = sorted((out / str(digit)).iterdir())
        assert [f.name for f in files] == ["0000.png", "0001.png"]
        for j, f in enumerate(files):
            cell = np.asarray(Image.open(f))
            assert cell.shape == (20, 20)
            assert (cell == 6 * (2 * digit + j) + 5).all()  # cell 2·digit + j of the sheet, row-major


def test_cut_folder_loads_as_image_folder(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from cut_digits import cut
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from mmssl.data.images import image_folder

    _sheet(tmp_path / "sheet.png", rows=4, cols=10)  # 4 cells per digit
    assert cut(tmp_path / "sheet.png", tmp_path / "d") == 40
    splits = image_folder(str(tmp_path / "d"), size=20, channels=1, test_fraction=0.5)
    assert splits.train.classes == [str(d) for d in range(10)]
    assert len(splits.train) + len(splits.test) == 40
    assert splits.train.groups is None  # the sheet has no writer ids, and none are made up
    images = splits.train.all()["image"]
    assert tuple(images.shape[1:]) == (1, 20, 20)


@pytest.mark.parametrize("shape, message", [((30, 200), "whole number of 20×20 cells"),
                                            ((20, 60), "10 equal digit runs")])
def test_cut_refuses_a_sheet_of_another_layout(tmp_path, shape, message):
    Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(tmp_path / "bad.png")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out"), "--sheet", str(tmp_path / "bad.png")],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert message in done.stderr and done.stderr.startswith("error:")


def _study():
    import importlib.util

    spec = importlib.util.spec_from_file_location("transfer_real_run", SCRIPT.parent / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_commands_compose(tmp_path):
    from mmssl.config import compose

    study = _study()
    cmd = study.pretrain_cmd("ssl20", 2, tmp_path / "run", tmp_path / "digits20")
    assert cmd[3] == "pretrain"
    cfg = compose("pretrain", cmd[4:])
    assert cfg.data.name == "image_folder" and cfg.data.size == 20 and cfg.seed == 2
    assert cfg.data.augment.crop_scale == [0.5, 1.0] and cfg.data.augment.degrees == 15.0
    assert cfg.objective.simclr.augment_kwargs.noise_std == 0.05  # the views reach the objective
    assert cfg.trainer.steps == study.PRETRAIN_STEPS
    assert compose("pretrain", study.pretrain_cmd("digits8", 0, tmp_path / "r8", tmp_path)[4:]).data.name == "digits"
    for method, (_, overrides) in study.METHODS.items():
        if overrides is not None:
            ft = compose("finetune", study.finetune_cmd(tmp_path / "run", method, "5")[5:])
            assert ft.labels == 5 and ft.from_scratch == (method == "scratch")
