"""Model folders derived from another encoder (``taxmig distill``, ``taxmig quantize``): the steps
they share -- the source model, the texts of the user's files with their provenance, and a folder
built beside its final place and renamed into it whole."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from migrate.core.encoder import EncoderSettings
from migrate.core.hashing import file_fingerprint
from migrate.errors import ModelError, OutputExistsError
from models.registry import ModelRef

TAXONOMY_SUFFIXES = (".txt", ".yaml", ".yml")


def check_new_folder(output_dir: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``output_dir`` unless ``overwrite`` (before any work)."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise OutputExistsError(output_dir)


def local_model(model: str | None, verb: str) -> ModelRef:
    """``--model`` resolved to a local folder (the bundled encoder when omitted); ``verb`` says
    what the command does to it, for the error."""
    ref = EncoderSettings(model=model).resolve()
    if not ref.is_local:
        raise ModelError(f"'{ref.name}' is not a local model folder",
                         hint=f"{verb} the bundled model (omit --model) or a folder written by 'taxmig train'")
    return ref


def file_texts(path: str | Path, *, text: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The texts of one file: a catalog's product texts (``text``: its text columns, comma
    separated, default as in ``migrate``), or a taxonomy's category paths (``.txt`` / ``.yaml``),
    read the way ``migrate`` reads them."""
    from migrate.core.catalog import load_catalog
    from migrate.core.taxonomy import load_taxonomy

    path = Path(path)
    if path.suffix.lower() in TAXONOMY_SUFFIXES:
        return list(load_taxonomy(path, encoding=encoding).categories)
    return load_catalog(path, role="vocabulary", text=text, encoding=encoding).texts


def texts_with_sources(files: Sequence[str | Path], *, text: str | None = None,
                       encoding: str = "utf-8") -> tuple[list[str], list[dict[str, str]]]:
    """Every file's texts, and per file its name, sha256 and number of texts (for the model card)."""
    texts: list[str] = []
    sources = []
    for path in files:
        found = file_texts(path, text=text, encoding=encoding)
        texts.extend(found)
        sources.append({"file": Path(path).name, "sha256": file_fingerprint(path), "texts": str(len(found))})
    return texts, sources


def sources_line(sources: list[dict[str, str]]) -> str:
    """The files a model was built from, as its card lists them."""
    return ", ".join(f"`{f['file']}` (sha256 `{f['sha256']}`, {f['texts']} texts)" for f in sources) or "no file"


@contextlib.contextmanager
def staged_folder(output_dir: Path) -> Iterator[Path]:
    """A private folder beside ``output_dir`` to build in; renamed into place when the block ends
    without error (an old folder moved aside first, removed after), removed when it fails."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is read by others too
    try:
        yield staging
        old = None
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old-{int(time.time() * 1000)}")
            output_dir.rename(old)
        staging.rename(output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
