"""`data.yaml`: where a dataset's images are and what its classes are called.

The format is the YOLO one the reference and ultralytics read::

    path: /data/shapes        # optional root for the relative paths below
    train: images/train       # a folder of images, a .txt list of image paths, or a list of either
    val: images/val
    names: [circle, square]   # or {0: circle, 1: square}
    nc: 2                     # optional; must agree with names

Labels sit beside the images, in ``labels/`` where the path says ``images/``, one
``class cx cy w h`` line per object, normalised to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator


class DataError(Exception):
    """An invalid data.yaml or dataset: a user error (exit 2), raised before any training."""


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: Path | None = None
    train: str | list[str]
    val: str | list[str]
    names: list[str]
    nc: int | None = None

    @field_validator("names", mode="before")
    @classmethod
    def _names(cls, v):
        if isinstance(v, dict):
            keys = sorted(v)
            if keys != list(range(len(keys))):
                raise ValueError("names as a mapping must have the keys 0 … nc−1")
            return [str(v[k]) for k in keys]
        return v

    @model_validator(mode="after")
    def _nc(self):
        if not self.names:
            raise ValueError("names is empty: a dataset needs at least one class")
        if self.nc is not None and self.nc != len(self.names):
            raise ValueError(f"nc is {self.nc} but names lists {len(self.names)} classes")
        self.nc = len(self.names)
        return self

    def split(self, which: str, root: Path) -> list[Path]:
        """The folders or list files of one split, resolved against ``path`` and ``root``."""
        items = getattr(self, which)
        base = self.path if self.path is not None else root
        if not base.is_absolute():
            base = root / base
        return [p if (p := Path(i)).is_absolute() else base / p for i in ([items] if isinstance(items, str) else items)]


def load_data_config(path: str | Path) -> DataConfig:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise DataError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping with train, val and names")
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise DataError(f"{path}: {field}: {err['msg']}") from None
