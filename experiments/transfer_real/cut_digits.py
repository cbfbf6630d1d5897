"""Cut OpenCV's sheet of handwritten digits into an image folder: `python cut_digits.py OUT [--sheet PNG]`.

The sheet (Debian package ``opencv-doc``, ``/usr/share/doc/opencv-doc/examples/data/digits.png``) is a
2000×1000 grey image: 50 rows × 100 columns of 20×20 cells, 5,000 digits, 500 consecutive cells (in row
order, i.e. 5 rows) per digit 0–9. This writes ``OUT/<digit>/<index>.png`` (``index`` 0000–0499 within
the digit, in sheet order), the one-sub-folder-per-class layout that ``data=image_folder`` reads.

The sheet carries no writer ids, so none are written: ``data.test_groups``/``data.group_pattern`` (and
``finetune per_group=true``) have no groups to use on this set, and splits are per image, not per writer.
A smaller sheet of the same layout works too (any multiple of 20 pixels each way, whose cell count is
a multiple of 10: cells are dealt to the ten digits in equal consecutive runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SHEET = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
CELL = 20
CLASSES = 10


def cut(sheet: str | Path, out: str | Path, cell: int = CELL, classes: int = CLASSES) -> int:
    """Write every ``cell``×``cell`` cell of ``sheet`` to ``out/<digit>/<index>.png``; returns the count.

    Cells are taken row by row (left to right, top to bottom); the first ``n / classes`` are digit 0, the
    next digit 1, and so on. Raises ``SystemExit`` with one line if the sheet does not fit that layout.
    """
    sheet, out = Path(sheet), Path(out)
    if not sheet.is_file():
        raise SystemExit(f"error: no sheet at {sheet}; install Debian's opencv-doc or pass --sheet PATH")
    grey = np.asarray(Image.open(sheet).convert("L"))
    h, w = grey.shape
    if h % cell or w % cell:
        raise SystemExit(f"error: {sheet} is {w}×{h} pixels, not a whole number of {cell}×{cell} cells")
    rows, cols = h // cell, w // cell
    n = rows * cols
    if n % classes:
        raise SystemExit(f"error: {sheet} has {n} cells, which do not split into {classes} equal digit runs")
    per_class = n // classes
    # (rows, cell, cols, cell) → (rows·cols, cell, cell) in row-major cell order
    cells = grey.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(n, cell, cell)
    width = max(4, len(str(per_class - 1)))
    for digit in range(classes):
        folder = out / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(cells[digit * per_class + i]).save(folder / f"{i:0{width}d}.png")
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write <digit>/<index>.png into")
    parser.add_argument("--sheet", default=str(SHEET), help=f"the digits sheet (default {SHEET})")
    args = parser.parse_args(argv)
    n = cut(args.sheet, args.out)
    print(f"wrote {n} images of {CLASSES} digits to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
