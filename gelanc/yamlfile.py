"""Reading the YAML files users write (data.yaml, hyp.yaml) into pydantic models,
with mistakes reported as ``file[:line:col]: field: message`` — never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: str | Path, error: type[Exception], what: str) -> dict:
    """The file's top-level mapping; ``error`` on a missing file, bad YAML or another shape."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no such {what} file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of {what} settings, got a {type(raw).__name__}")
    return raw


def validate(model: type[M], raw: dict, error: type[Exception], where: str) -> M:
    """``model.model_validate(raw)``, its first mistake as ``error("where: field: message")``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "not a setting gelanc knows" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        raise error(f"{where}: {field}: {msg}") from None
