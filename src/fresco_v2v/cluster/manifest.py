"""The manifest of `fresco batch`: which videos, with which prompt and options, into which folders of OUTROOT.

YAML (a list of mappings) or CSV with a header row. Each entry has ``input`` and ``prompt`` and may set any other
field of a ``--config`` file; ``output`` is a folder name under OUTROOT (default: the input's stem), made unique
with ``-2``, ``-3``... A relative ``input`` (or style image, or mask folder) is read from the manifest's folder.
CSV cells are read as YAML scalars (``true``, ``0.5``, ``[1.2, 1.4, 0.9, 0.2]``), and an empty cell leaves the field
at its default.

An entry that does not validate is kept with its error, so that it is reported while the other videos run.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import RunConfig, to_dict
from ..errors import ConfigError, InputError


@dataclass(frozen=True)
class ManifestEntry:
    """One video of the manifest: its folder name under OUTROOT and its validated config, or why it has none."""

    name: str
    config: RunConfig | None
    error: str | None = None


def _rows(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    if path.suffix.lower() == ".csv":
        rows = []
        for row in csv.DictReader(text.splitlines()):
            cells = {k.strip(): v for k, v in row.items() if k is not None and v is not None and v.strip() != ""}
            rows.append(
                {k: yaml.safe_load(v) if k not in ("input", "prompt", "output") else v for k, v in cells.items()}
            )
        return rows
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            "manifest", "a YAML list of mappings (input, prompt, options)", f"invalid YAML ({e})"
        ) from None
    if not isinstance(data, list):
        raise ConfigError("manifest", "a YAML list of mappings (input, prompt, options)", type(data).__name__)
    return data


#: The manifest's fields that name files or folders: relative ones are read from the manifest's folder.
PATH_FIELDS = ("input", "style_image", "foreground_masks")


def _beside(folder: Path, row: dict) -> dict:
    """``row`` with its relative paths (``PATH_FIELDS``, and the images of ``style_images``) under ``folder``."""

    def under(v):
        return str(folder / v) if isinstance(v, str) and v and not Path(v).is_absolute() else v

    row = {k: under(v) if k in PATH_FIELDS else v for k, v in row.items()}
    if isinstance(row.get("style_images"), dict):
        row["style_images"] = {k: under(v) for k, v in row["style_images"].items()}
    return row


def _folder_name(text: str) -> str:
    """An output name as one safe folder name (no separators, no leading dot)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return name or "video"


def read_manifest(path: str | Path, outroot: str | Path, defaults: dict | None = None) -> list[ManifestEntry]:
    """Entries of the manifest at ``path``, each over ``defaults`` (fields of a --config file) and into OUTROOT."""
    path, outroot = Path(path), Path(outroot)
    base = to_dict(RunConfig(input="", prompt="")) | (defaults or {})
    entries: list[ManifestEntry] = []
    taken: set[str] = set()
    for n, row in enumerate(_rows(path), start=1):
        if not isinstance(row, dict):
            entries.append(ManifestEntry(f"entry-{n}", None, f"entry {n}: expected a mapping, got {row!r}"))
            continue
        stem = Path(str(row.get("input") or f"entry-{n}")).stem
        name = _folder_name(row.get("output") or stem)
        unique, k = name, 1
        while unique in taken:
            k += 1
            unique = f"{name}-{k}"
        taken.add(unique)
        data = dict(base) | _beside(path.parent, {k: v for k, v in row.items() if k != "output"})
        data["output"] = str(outroot / unique)
        try:
            cfg = RunConfig.from_dict(data).validate()
        except ConfigError as e:
            entries.append(ManifestEntry(unique, None, f"entry {n} ({unique}): {e}"))
            continue
        entries.append(ManifestEntry(unique, cfg))
    if not entries:
        raise ConfigError("manifest", "at least one video", str(path))
    return entries
