"""Reading back the markdown tables and PNG plots experiments write (tests' helper)."""

import math
import pathlib
import re

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf", re.IGNORECASE)


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The first table of `markdown` as {first cell: {column header: cell}}."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def cell_numbers(cell: str) -> list[float]:
    """`0.85 ± 0.04` -> [0.85, 0.04]; `–` -> []; every number must be finite."""
    values = [float(x) for x in NUMBER.findall(cell)]
    assert all(math.isfinite(v) for v in values), cell
    return values


def assert_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, (path, len(data))


def plotted_axes(monkeypatch, draw) -> list:
    """The axes of the figure `draw()` saves (captured where it is closed)."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    draw()
    (figure,) = figures
    return figure.axes
