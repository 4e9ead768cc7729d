"""A CSV log of training metrics (one row per logged step) and its loss plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class MetricsLog:
    """Appends ``{"step", "split", name: value}`` rows to ``<run>/metrics.csv``.

    The header is the union of all names seen; rows are appended, and the file is rewritten only
    when a new name appears, so resumed runs keep appending to the same table.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float | int | str]] = []
        self.names: list[str] = []
        if self.path.is_file():
            with self.path.open(newline="") as file:
                reader = csv.DictReader(file)
                self.rows = list(reader)
                self.names = list(reader.fieldnames or [])

    def truncate_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (a resumed run replays those steps)."""
        self.rows = [row for row in self.rows if int(row["step"]) <= step]
        self._write()

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        row: dict[str, float | int | str] = {"step": step, "split": split, **metrics}
        self.rows.append(row)
        if any(name not in self.names for name in row):
            self._write()
            return
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.names).writerow(row)

    def series(self, split: str, name: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric, skipping rows without it."""
        steps, values = [], []
        for row in self.rows:
            value = row.get(name)
            if row["split"] == split and value not in (None, ""):
                steps.append(int(row["step"]))
                values.append(float(value))
        return steps, values

    def _write(self) -> None:
        for row in self.rows:
            self.names.extend(name for name in row if name not in self.names)
        temporary = self.path.with_suffix(".csv.tmp")
        with temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.names)
            writer.writeheader()
            writer.writerows(self.rows)
        temporary.replace(self.path)

    def plot(self, path: str | Path, metric: str = "loss") -> Path | None:
        """Draw train and valid ``metric`` against step into a PNG; None when nothing is logged yet."""
        train_steps, train_values = self.series("train", metric)
        if not train_steps:
            return None
        from timbre.plots import plot_loss_curve  # matplotlib is imported only when plotting

        valid_steps, valid_values = self.series("valid", metric)
        finite = [(s, v) for s, v in zip(valid_steps, valid_values) if math.isfinite(v)]
        return plot_loss_curve(
            train_steps,
            train_values,
            path,
            valid_steps=[s for s, _ in finite] or None,
            valid_losses=[v for _, v in finite] or None,
        )
