"""Reading the YAML files users write (data.yaml, hyp.yaml) into pydantic models,
with mistakes reported as ``file[:line:col]: field: message`` — never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gelanc import files
from gelanc.limits import MAX_DATA_YAML_BYTES

M = TypeVar("M", bound=BaseModel)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases.

    ``*name`` makes a reference, not a copy, so a few kilobytes of nested aliases (the
    "billion laughs") read as a structure that anything walking it — pydantic's
    validation, our conversion — visits billions of times. The files gelanc reads never
    need one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in this file",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def parse(text: str):
    """The YAML ``text`` as Python data (:class:`Loader`), or a ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes nested collections recursively
        raise yaml.YAMLError("collections nested too deeply") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML cannot build: a date 2001-13-45, an int of 5000 digits
        raise yaml.YAMLError(f"a value that is not valid ({type(e).__name__})") from None


def compose(text: str) -> yaml.Node:
    """The YAML ``text``'s node tree (for locations), read as :func:`parse` reads it."""
    try:
        return yaml.compose(text, Loader=Loader)
    except RecursionError:
        raise yaml.YAMLError("collections nested too deeply") from None


def read_bounded(path: Path, limit: int = MAX_DATA_YAML_BYTES, name: str = "gelanc.limits.MAX_DATA_YAML_BYTES"
                 ) -> bytes:
    """The file's bytes (:func:`gelanc.files.read_bounded`: a regular file, opened without
    blocking); a ValueError naming the bound ``name`` when it holds more than ``limit``,
    an OSError (``strerror`` "not a regular file" for a FIFO or a device) when it cannot be read."""
    return files.read_bounded(path, limit, name)


def read_mapping(path: str | Path, error: type[Exception], what: str) -> dict:
    """The file's top-level mapping; ``error`` on a missing file, bad YAML or another shape."""
    path = Path(path)
    try:
        data = read_bounded(path)
    except FileNotFoundError:
        raise error(f"no such {what} file: {path}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or type(e).__name__}") from None
    except ValueError as e:
        raise error(f"{path}: {e}: not a {what} file") from None
    try:
        raw = parse(data.decode("utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
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
