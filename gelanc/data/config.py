"""`data.yaml`: where a dataset's images are and what its classes are called.

The format is the YOLO one the reference and ultralytics read::

    path: /data/shapes        # optional root for the relative paths below
    train: images/train       # a folder of images, a .txt list of image paths, or a list of either
    val: images/val
    names: [circle, square]   # or {0: circle, 1: square}
    nc: 2                     # optional; must agree with names

Labels sit beside the images, in ``labels/`` where the path says ``images/``, one
``class cx cy w h`` line per object, normalised to [0, 1]. A split may instead be a
COCO instances file with its images folder::

    train: {annotations: annotations/instances_train2017.json, images: images/train2017}

and ``names`` may then be left out: the JSON's categories name the classes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gelanc.errors import UserError


class DataError(UserError):
    """An invalid data.yaml or dataset: a user error (exit 2), raised before any training."""


class CocoSplit(BaseModel):
    """A split given as a COCO instances JSON and the folder its ``file_name``s are in."""

    model_config = ConfigDict(extra="forbid")
    annotations: str
    images: str


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: Path | None = None
    train: str | list[str] | CocoSplit
    val: str | list[str] | CocoSplit
    names: list[str] | None = None
    nc: int | None = None

    @field_validator("train", "val", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, dict):
            return CocoSplit.model_validate(v)  # its own errors name the missing key
        if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(i, str) for i in v)):
            return v
        raise ValueError("expected a folder or .txt list of images, a list of them, "
                         "or {annotations: FILE.json, images: FOLDER}")

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
        if self.names is None:
            if isinstance(self.train, CocoSplit) and isinstance(self.val, CocoSplit):
                return self  # the COCO files name the classes
            raise ValueError("names is missing: list the class names (only COCO splits may leave it out)")
        if not self.names:
            raise ValueError("names is empty: a dataset needs at least one class")
        if self.nc is not None and self.nc != len(self.names):
            raise ValueError(f"nc is {self.nc} but names lists {len(self.names)} classes")
        self.nc = len(self.names)
        return self

    def resolve(self, item: str, root: Path) -> Path:
        """A path of the file, against ``path`` (itself against the file's folder ``root``)."""
        base = self.path if self.path is not None else root
        if not base.is_absolute():
            base = root / base
        return p if (p := Path(item)).is_absolute() else base / p

    def split(self, which: str, root: Path) -> list[Path]:
        """The folders or list files of one YOLO split, resolved."""
        items = getattr(self, which)
        return [self.resolve(i, root) for i in ([items] if isinstance(items, str) else items)]


def load_data_config(path: str | Path) -> DataConfig:
    from gelanc.yamlfile import read_mapping, validate

    raw = read_mapping(path, DataError, "data")
    if not raw:
        raise DataError(f"{path}: expected a mapping with train, val and names")
    return validate(DataConfig, raw, DataError, str(path))
