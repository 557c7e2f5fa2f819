"""Small file helpers shared across the package."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see either the old file or the complete new one, never a half-written one; a failure (or a
    kill) part-way leaves ``path`` untouched and removes the temporary file where it can.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file private (0600); give it the mode an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves in ``folder`` when a writer is killed part-way
    (``.NAME.XXXX.tmp``); call it before writing into a folder again. Returns what was removed."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file.

    A line that is not a JSON object raises ``ValueError`` naming the file and line.
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file, in order (a bad line raises ValueError naming file and line)."""
    return (row for _, row in iter_jsonl(path))


def check_out_folder(path: str | os.PathLike, holds: str) -> Path:
    """Refuse an ``--out`` that names an existing file before any work is done; ``holds`` says what goes in."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"--out {path}: {part} is a file; give a folder (it will hold {holds})")
    return path


def expand_files(sources: Sequence[str], pattern: str) -> list[Path]:
    """Files named by ``sources``: files as given, folders searched recursively for ``pattern``, globs expanded."""
    files: list[Path] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            found = sorted(path.rglob(pattern))
            if not found:
                raise FileNotFoundError(f"no {pattern} files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(src, recursive=True))
            if not matches:
                raise FileNotFoundError(f"not found: {src} (no such file, folder or glob match)")
            files.extend(matches)
    return files


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}); a missing file, bad YAML, a key given twice in one
    mapping (YAML would silently keep the last) or another top level is an error."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden key by key
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    mark = key_node.start_mark
                    raise ValueError(
                        f"{path}:{mark.line + 1}: the key {key!r} is given twice in one mapping (YAML would keep "
                        "only the last); give it once"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data
