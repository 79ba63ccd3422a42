"""The state folder of a catalog under nightly reconciliation, written so that a crash never
leaves it half updated.

Layout::

    DIR/
      CURRENT                  name of the current generation (replaced atomically)
      generations/<gen>/       one complete, immutable snapshot per committed run
          meta.json            settings (target, model, thresholds, columns), run info, input fingerprints
          products.parquet     one row per live product: model suggestion, decision, final category, flags
          decisions.parquet    every decision a person made, oldest first (never rewritten, only extended)
          category_decisions.parquet  every category / pair decision, oldest first (absent: none yet)
          targets.parquet      the target categories (and target catalog products) of that run
          report.xlsx/.json    the run's report, published to the user's -o path after the commit
      embeddings.sqlite        vector cache keyed by model fingerprint + text hash
      target_side.json, .npz   a labelled target's fitted classifier and calibration, as numbers and text
                               (migrate.mapping.fitted_target; checked on reading, refitted when anything is off)
      history.jsonl            one line per run: inputs, model, counts, outcome
      lock, lock.owner         held by the running command, and who it is (see :mod:`migrate.nightly.lock`)

A run builds its generation in a temporary folder, renames it into ``generations/`` and then
replaces ``CURRENT``: killed before that last step, the previous generation is still current;
killed after it, the new one is complete. Old generations beyond :data:`KEEP_GENERATIONS` are
deleted after a commit.

>>> store = StateStore.create("/tmp/state-doctest")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from migrate.errors import TaxmigError
from migrate.mapping.category_decisions import CATEGORY_DECISION_SCHEMA
from migrate.mapping.kept_scores import KeptScores

log = logging.getLogger(__name__)

STATE_FORMAT = 2
"""2: the remembered settings nest the encoder fields under ``encoder`` (EncoderSettings)."""
READABLE_FORMATS = (1, 2)
"""1 kept them at the top level; :func:`migrate.nightly.reconcile.settings_for_night` reads both."""
KEEP_GENERATIONS = 5
CURRENT = "CURRENT"
GENERATIONS = "generations"
META = "meta.json"  # a generation's settings and run record
SCORES_FILE = "scores.parquet"
"""A generation's kept scores (:mod:`migrate.mapping.kept_scores`): the next night scores only what changed."""
HISTORY = "history.jsonl"
CACHE = "embeddings.sqlite"
FITTED_TARGET = "target_side.json"
"""The fitted target side's record; its arrays are beside it as ``target_side.npz``. No file in a
state folder is ever unpickled or run: a ``target_side.pkl`` of older versions is ignored."""
CATEGORY_DECISIONS = "category_decisions.parquet"


class StateError(TaxmigError):
    """The state folder is missing, from another version, or damaged."""


# --- table schemas ---------------------------------------------------------------------------

PRODUCT_SCHEMA: dict[str, pl.DataType] = {
    "product_id": pl.String, "source_row": pl.Int64, "source_text": pl.String, "source_category": pl.String,
    "content_hash": pl.String,
    "target_category": pl.String, "target_id": pl.String, "confidence": pl.Float64, "margin": pl.Float64,
    "score": pl.Float64, "alt1_category": pl.String, "alt1_score": pl.Float64, "alt2_category": pl.String,
    "alt2_score": pl.Float64, "model_flags": pl.String,
    "decision": pl.String, "decided_by": pl.String, "decided_at": pl.String, "decision_note": pl.String,
    "decision_text": pl.String,
    "final_category": pl.String, "final_source": pl.String, "flags": pl.String, "needs_review": pl.Boolean,
    "first_seen_run": pl.String, "text_changed_run": pl.String,
}
"""A live product in the state. ``decision`` is a category, ``NEW CATEGORY NEEDED`` or empty;
``final_source`` is ``reviewer``, ``model`` or ``new_category``."""

DECISION_SCHEMA: dict[str, pl.DataType] = {
    "product_id": pl.String, "decision": pl.String, "kind": pl.String, "suggested_category": pl.String,
    "decided_by": pl.String, "decided_at": pl.String, "note": pl.String, "source_text": pl.String,
    "source_category": pl.String, "content_hash": pl.String, "workbook": pl.String, "workbook_run": pl.String,
    "sheet_row": pl.String, "applied_run": pl.String, "scope": pl.String,
}
"""One decision of a person. ``kind``: accept, override or new_category. ``scope``: ``row`` (made on
the product itself; null in logs written before category decisions) or the category decision that
set it (:func:`migrate.mapping.category_decisions.decision_id`)."""

TARGET_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String, "key": pl.String, "category": pl.String, "taxonomy_id": pl.String, "content_hash": pl.String,
}
"""Target snapshot rows: ``kind`` ``category`` (key = the category) or ``product`` (key = the target
product id, with its category and content hash)."""


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in order (missing ones null)."""
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c)
                         for c, t in schema.items()])


META_SHAPE = {"settings": dict, "run": dict}
"""What a generation's meta.json holds, where present, and of which JSON type (an object each; a
night needs the settings: :func:`migrate.nightly.reconcile` stops when they are missing)."""
RUN_SHAPE = {"run_id": str, "publish": list, "counts": dict}
"""The run record's fields, where present, and their types."""


def meta_problems(meta: Any) -> list[str]:
    """Every way ``meta`` (a parsed meta.json) is not a taxmig run record, all at once (empty: it is).

    >>> meta_problems({"settings": {}, "run": {"run_id": "r1", "publish": []}})
    []
    >>> meta_problems({"settings": [], "run": {"publish": "x"}})
    ['settings is not an object', 'run.publish is not a list']
    """
    if not isinstance(meta, dict):
        return ["not a JSON object"]
    names = {dict: "an object", list: "a list", str: "a string"}
    problems = [f"{key} is not {names[kind]}" for key, kind in META_SHAPE.items()
                if key in meta and not isinstance(meta[key], kind)]
    run = meta.get("run")
    if isinstance(run, dict):
        problems += [f"run.{key} is not {names[kind]}" for key, kind in RUN_SHAPE.items()
                     if key in run and not isinstance(run[key], kind)]
    return problems


def remembered_settings(settings: dict[str, Any], *, given: bool = False) -> dict[str, Any]:
    """A generation's remembered settings (meta.json's ``settings``) with the encoder fields nested
    and ``trust_remote_code`` dropped: it lets a model folder's own Python run, and nothing in a state
    folder may make a run execute code, so a run that needs it is given ``--trust-remote-code``
    itself (``given``: it was; no warning then). A copy; ``settings`` is left as it is."""
    from migrate.mapping.settings import with_nested_encoder

    data = with_nested_encoder(dict(settings))
    encoder = data.get("encoder")
    if isinstance(encoder, dict) and "trust_remote_code" in encoder:
        data["encoder"] = {k: v for k, v in encoder.items() if k != "trust_remote_code"}
        if encoder["trust_remote_code"] and not given:
            log.warning("the state remembers --trust-remote-code, which a state folder never turns on (it runs the "
                        "model folder's own code): pass --trust-remote-code to this run to use it")
    return data


def may_encode_with_torch(state_dir: str | Path, catalog: str | Path, encoder_overrides: dict[str, Any]) -> bool:
    """A quick guess, from the current generation's meta.json alone, whether tonight's run will
    encode with torch in fp32 -- the case of the encoder worker process (:mod:`models.side_worker`):
    the catalog file differs from the last night's, and the remembered (or given) encoder is torch,
    fp32 (``auto`` resolved on this machine), without remote code, on the CPU or no device named. An unreadable or older meta answers
    True; a guess, never a decision."""
    from migrate.core.hashing import file_fingerprint

    store = StateStore(state_dir)
    try:
        meta = store.read_meta(store.current_name())
    except (OSError, ValueError, StateError):
        return True
    from models.registry import resolve_precision

    encoder = {**((meta.get("settings") or {}).get("encoder") or {}), **encoder_overrides}
    precision = resolve_precision(encoder.get("precision") or "fp32", encoder.get("backend") or "torch",
                                  encoder.get("device"))
    if (encoder.get("backend") or "torch") != "torch" or precision != "fp32" \
            or encoder.get("trust_remote_code") or encoder.get("device") not in (None, "cpu"):
        return False
    last = ((meta.get("run") or {}).get("inputs") or {}).get("catalog_fingerprint")
    try:
        return last is None or last != file_fingerprint(catalog)
    except OSError:  # the night itself reports the missing file
        return False


@dataclass
class Generation:
    """One committed snapshot of the state."""

    name: str
    meta: dict[str, Any]
    products: pl.DataFrame
    decisions: pl.DataFrame
    targets: pl.DataFrame
    folder: Path | None = None
    category_decisions: pl.DataFrame = field(default_factory=lambda: empty(CATEGORY_DECISION_SCHEMA))

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run", {}).get("run_id", ""))

    def kept_scores(self) -> KeptScores | None:
        """The scores this generation's night kept for the next one (None: score every product)."""
        return KeptScores.read(self.folder / SCORES_FILE) if self.folder is not None else None

    def carry_scores(self, files: dict[str, Callable[[Path], None]]) -> dict[str, Callable[[Path], None]]:
        """``files`` plus this generation's kept scores, copied: for a generation that scores nothing."""
        kept = self.folder / SCORES_FILE if self.folder is not None else None
        if kept is not None and kept.exists():
            return {**files, SCORES_FILE: lambda p: shutil.copyfile(kept, p)}
        return files

    def latest_decisions(self) -> pl.DataFrame:
        """The last decision per product (the one in force)."""
        return latest_per_product(self.decisions)


def latest_per_product(decisions: pl.DataFrame) -> pl.DataFrame:
    """The last row per product of a decision log, oldest product first (the decisions in force)."""
    if decisions.height == 0:
        return decisions
    return decisions.group_by("product_id", maintain_order=True).last()


@dataclass
class NewGeneration:
    """What a run wants to commit; extra files (reports) are written by callbacks into the folder."""

    meta: dict[str, Any]
    products: pl.DataFrame
    decisions: pl.DataFrame
    targets: pl.DataFrame
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    category_decisions: pl.DataFrame = field(default_factory=lambda: empty(CATEGORY_DECISION_SCHEMA))


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def fault_point(stage: str) -> None:
    """Crash-safety tests: ``TAXMIG_FAULT_AT=<stage>`` kills the process (SIGKILL) at that stage."""
    if os.environ.get("TAXMIG_FAULT_AT") == stage:
        import signal

        log.warning("TAXMIG_FAULT_AT=%s: killing this process to test crash safety", stage)
        os.kill(os.getpid(), signal.SIGKILL)


class StateStore:
    """Reads and commits generations of one state folder (callers hold its :class:`RunLock`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- locations ---
    @property
    def cache_path(self) -> Path:
        return self.root / CACHE

    @property
    def fitted_target_path(self) -> Path:
        return self.root / FITTED_TARGET

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY

    def exists(self) -> bool:
        return (self.root / CURRENT).is_file()

    @classmethod
    def open(cls, root: str | Path) -> "StateStore":
        store = cls(root)
        if not store.exists():
            what = "does not exist" if not store.root.exists() else "holds no taxmig state"
            raise StateError(f"state folder {store.root} {what}",
                             hint="create it with 'taxmig migrate ... --state DIR' or "
                                  "'taxmig reconcile CATALOG --state DIR --init --target-... FILE'")
        return store

    @classmethod
    def create(cls, root: str | Path) -> "StateStore":
        store = cls(root)
        if store.exists():
            raise StateError(f"state folder {store.root} already holds a state",
                             hint="run 'taxmig reconcile CATALOG --state DIR' for later nights, or choose a new folder")
        (store.root / GENERATIONS).mkdir(parents=True, exist_ok=True)
        return store

    # --- reading ---
    def current_name(self) -> str:
        try:
            name = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.root / CURRENT} cannot be read ({exc.__class__.__name__})",
                             hint=f"restore the folder from a backup, or write the name of one of "
                                  f"{', '.join(self.generation_names()) or '(none)'} into it") from None
        if not name or name not in self.generation_names():  # nothing outside generations/ either
            raise StateError(f"{self.root / CURRENT} names generation '{name}', which is missing",
                             hint=f"restore the folder from a backup, or point CURRENT at one of "
                                  f"{', '.join(self.generation_names()) or '(none)'}")
        return name

    def generation_names(self) -> list[str]:
        folder = self.root / GENERATIONS
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if folder.exists() else []

    def read_meta(self, name: str) -> dict[str, Any]:
        """Generation ``name``'s meta.json alone (settings and last run, no tables); raises OSError,
        ValueError (not UTF-8, not JSON) or :class:`StateError` (JSON, but not an object)."""
        path = self.root / GENERATIONS / name / META
        meta = json.loads(path.read_text(encoding="utf-8"))
        problems = meta_problems(meta)
        if problems:
            raise StateError(f"{path} holds no taxmig run record: {'; '.join(problems)}",
                             hint="the folder was changed by hand or the disk is damaged; restore a backup")
        return meta

    def load(self, name: str | None = None) -> Generation:
        name = name or self.current_name()
        folder = self.root / GENERATIONS / name
        try:
            meta = self.read_meta(name)
            if meta.get("state_format") not in READABLE_FORMATS:
                raise StateError(f"{folder}: state format {meta.get('state_format')} is not {STATE_FORMAT}",
                                 hint="use the taxmig version that wrote it, or start a new state folder")
            categories = folder / CATEGORY_DECISIONS
            category_decisions = (conform(pl.read_parquet(categories), CATEGORY_DECISION_SCHEMA)
                                  if categories.exists() else empty(CATEGORY_DECISION_SCHEMA))
            return Generation(name=name, meta=meta, category_decisions=category_decisions,
                              products=conform(pl.read_parquet(folder / "products.parquet"), PRODUCT_SCHEMA),
                              decisions=conform(pl.read_parquet(folder / "decisions.parquet"), DECISION_SCHEMA),
                              targets=conform(pl.read_parquet(folder / "targets.parquet"), TARGET_SCHEMA),
                              folder=folder)
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:  # ValueError: not UTF-8, not JSON
            raise StateError(f"{folder}: cannot read the state ({exc.__class__.__name__}: {exc})",
                             hint="the folder was changed by hand or the disk is damaged; restore a backup") from None

    # --- writing ---
    def commit(self, new: NewGeneration) -> Generation:
        """Write ``new`` as the next generation and make it current, atomically."""
        gens = self.root / GENERATIONS
        gens.mkdir(parents=True, exist_ok=True)
        previous = self.generation_names()
        seq = int(previous[-1].split("-", 1)[0]) + 1 if previous else 1
        run_id = str(new.meta.get("run", {}).get("run_id", "run"))
        name = f"{seq:06d}-{run_id}"
        meta = {**new.meta, "state_format": STATE_FORMAT, "generation": name}
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=gens))
        tmp.chmod(0o755)
        try:
            conform(new.products, PRODUCT_SCHEMA).write_parquet(tmp / "products.parquet")
            conform(new.decisions, DECISION_SCHEMA).write_parquet(tmp / "decisions.parquet")
            conform(new.targets, TARGET_SCHEMA).write_parquet(tmp / "targets.parquet")
            conform(new.category_decisions, CATEGORY_DECISION_SCHEMA).write_parquet(tmp / CATEGORY_DECISIONS)
            for file_name, writer in new.files.items():
                writer(tmp / file_name)
            fault_point("generation-files")
            _write_json(tmp / META, meta)
            for child in tmp.iterdir():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, gens / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(gens)
        fault_point("before-current")
        pointer = self.root / f".{CURRENT}.tmp"
        pointer.write_text(name + "\n", encoding="utf-8")
        with open(pointer, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(pointer, self.root / CURRENT)
        _fsync_dir(self.root)
        log.info("committed state generation %s", name)
        self._prune(keep=name)
        return self.load(name)

    def _prune(self, keep: str) -> None:
        gens = self.root / GENERATIONS
        names = self.generation_names()
        for old in names[:-KEEP_GENERATIONS]:
            if old != keep:
                shutil.rmtree(gens / old, ignore_errors=True)
        for leftover in gens.glob(".*"):  # temporary folders of runs that died before their rename
            shutil.rmtree(leftover, ignore_errors=True)

    # --- history ---
    def history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        out = []
        for line in self.history_path.read_bytes().decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash (or not a history line at all)
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def append_history(self, record: dict[str, Any]) -> None:
        """Append one JSON line (after a newline if a crash cut the last line short)."""
        cut = False
        if self.history_path.exists() and self.history_path.stat().st_size:
            with open(self.history_path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                cut = fh.read(1) != b"\n"
        with open(self.history_path, "a", encoding="utf-8") as fh:
            fh.write(("\n" if cut else "") + json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
