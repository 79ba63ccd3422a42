"""Speed tiers and scale: the transformer against its OpenVINO, ONNX and static tiers, and a million products.

Part ``tiers`` (one run, same machine, ratios to torch fp32): per tier -- the bundled
all-MiniLM-L6-v2 in torch fp32; the same model with ``--backend openvino`` (fp32 export) and
quantized to int8 by ``taxmig quantize --backend openvino``, calibrated on WANDS furniture queries
and on the labelled path's own source file (the OpenVINO tiers when taxmig[openvino] is
installed); with ``--backend onnx`` (fp32 export) and quantized by ``taxmig quantize --backend
onnx`` -- and, beside it, the same dynamic quantization with onnxruntime's default 8-bit weights
per tensor, the setting taxmig does not use (the ONNX tiers when taxmig[onnx] is); the same model
distilled by ``taxmig distill`` (model2vec, 256 dims) without and with the catalogs' words (when
taxmig[static] is) -- the raw encode rate on 5,000 BigBasket texts and the vectors' cosine to
torch fp32's on them (lowest and mean), and
  * labelled target: BigBasket 80/20 (bench/common.py split), top-1, unflagged precision and share,
    end-to-end products/s;
  * zero-shot: BigBasket's held-out 20% onto its 99 two-level paths, and Instacart onto its 134
    aisles (taxonomy files, no labelled product; bench/zeroshot_bench.py's sets), top-1;
  * match: Abt-Buy (DeepMatcher split), the hybrid scorer fitted on train with the tier's encoder,
    threshold on valid, F1 on test (bench/match_bench.py's "base encoder" row).
The exports, int8 folders and static models are built in the run (their seconds are reported).

Part ``million``: a 1,000,000-product source built from real BigBasket rows (every product
repeated, each copy after the first with its name perturbed -- a word dropped, two swapped, a pack
size added or the case lowered -- and ids made unique; seed 0) migrated by the CLI in a child
process onto the BigBasket catalog (labelled target) and onto the Google taxonomy, with the static
tier, output Parquet; wall time and peak RSS of the child (``os.wait4``). With ``--torch-rows N``
the transformer maps the first N of them onto the BigBasket catalog too, for its time per 100k.

Part ``ray``: ``--engine ray`` (a local Ray, one actor per core) against the local engine on the
same Parquet source (the first ``--ray-rows`` of the million file, default 100,000) onto the
BigBasket catalog, static tier, and the first ``--ray-torch-rows`` with torch fp32: wall time of
each ``taxmig migrate`` child and whether the two mappings agree (every text and flag column
equal; rounded scores within 1e-4).

    python bench/scale_bench.py                       # parts tiers and million
    python bench/scale_bench.py --parts tiers --limit 3000
    python bench/scale_bench.py --parts tiers --tiers "onnx,openvino int8 (calibrated on the run's source)"
    python bench/scale_bench.py --parts ray
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BIGBASKET, DATA, bigbasket_split, publish, write_split  # noqa: E402
from bench.migrate_bench import evaluate, text_of, unflagged_precision  # noqa: E402

log = logging.getLogger("scale_bench")
GOOGLE = DATA / "google_product_taxonomy" / "taxonomy-with-ids.en-US.txt"
WANDS = DATA / "wands" / "query.csv"
ENCODE_SAMPLE = 5000


def perturbed_catalog(n: int, path: Path, seed: int = 0) -> Path:
    """``n`` products from BigBasket's real rows: copy 0 as is, later copies with names perturbed."""
    frame = pl.read_csv(BIGBASKET, infer_schema=False).select("index", "product", "brand")
    frame = frame.filter(pl.col("product").is_not_null())
    rng = random.Random(seed)

    def perturb(name: str) -> str:
        words = name.split()
        r = rng.random()
        if r < 0.3 and len(words) > 2:
            words.pop(rng.randrange(len(words)))
        elif r < 0.6 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif r < 0.8:
            words.append(f"Pack of {rng.randint(2, 12)}")
        else:
            words = [w.lower() for w in words]
        return " ".join(words)

    ids, names, brands = [], [], []
    products, indices, brand_col = frame["product"].to_list(), frame["index"].to_list(), frame["brand"].to_list()
    copy = 0
    while len(ids) < n:
        for product, index, brand in zip(products, indices, brand_col):
            if len(ids) == n:
                break
            ids.append(f"{index}-{copy}")
            names.append(product if copy == 0 else perturb(product))
            brands.append(brand)
        copy += 1
    pl.DataFrame({"id": ids, "product": names, "brand": brands}).write_csv(path)
    return path


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit code, last output lines) of one ``taxmig`` process
    (``env``: variables set for it on top of this process's)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "migrate.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode, "\n".join(out.splitlines()[-3:])


def timed_migration(args: list[str], out: Path,
                    env: dict[str, str] | None = None) -> tuple[float, float, int, str, int]:
    """:func:`run_child` of a ``taxmig migrate`` writing Parquet to ``out``, and the rows it holds."""
    seconds, rss, code, tail = run_child(args, env)
    mapped = pl.scan_parquet(out).select(pl.len()).collect().item() if out.exists() else 0
    return seconds, rss, code, tail, mapped


# --- part: tiers -----------------------------------------------------------------------------

def tier_models(tmp: Path, vocabulary: list[Path], wanted: list[str] | None = None
                ) -> list[tuple[str, str | None, str, float]]:
    """(tier name, --model value, --backend, seconds to build it): torch fp32, the distilled static
    models, where taxmig[openvino] is installed the OpenVINO fp32 export and two int8 folders
    from ``taxmig quantize`` -- calibrated on WANDS furniture queries (retail text from none of the
    evaluated sets) and on the migration's own source file (what a user would pass) --, and where
    taxmig[onnx] is the ONNX fp32 export, ``taxmig quantize --backend onnx``'s int8 and the same
    with onnxruntime's default weights (8-bit, per tensor). ``wanted``: name prefixes of the tiers
    to build besides torch fp32 (None: all)."""
    import importlib.util

    from train.distill import distill_static

    def want(name: str) -> bool:
        return wanted is None or any(name.startswith(prefix) for prefix in wanted)

    tiers: list[tuple[str, str | None, str, float]] = [("torch fp32 (all-MiniLM-L6-v2)", None, "torch", 0.0)]
    os.environ.setdefault("TAXMIG_CACHE_DIR", str(tmp / "cache"))
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        from models import load_encoder, resolve_model
        from models.registry import export_backend
        from models.runtime import ONNX_FILE, copy_configuration
        from train.quantize import quantize_onnx

        if want("onnx fp32"):
            started = time.perf_counter()
            load_encoder(resolve_model(None), backend="onnx")  # the export, cached for the runs below
            tiers.append(("onnx fp32", None, "onnx", time.perf_counter() - started))
        if want("onnx int8 (taxmig"):
            quantized = quantize_onnx(tmp / "onnx-int8")
            tiers.append(("onnx int8 (taxmig quantize --backend onnx)", str(quantized.output_dir), "onnx",
                          quantized.seconds))
        if want("onnx int8 8-bit"):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            started = time.perf_counter()
            exported = Path(export_backend(resolve_model(None), "onnx"))
            folder = tmp / "onnx-int8-8bit"
            copy_configuration(exported, folder)
            (folder / ONNX_FILE).parent.mkdir(parents=True)
            quantize_dynamic(str(exported / ONNX_FILE), str(folder / ONNX_FILE), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": 1})
            tiers.append(("onnx int8 8-bit weights per tensor (onnxruntime's defaults)", str(folder), "onnx",
                          time.perf_counter() - started))
    else:
        log.warning("taxmig[onnx] is not installed: the ONNX tiers are left out")
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        from models import load_encoder, resolve_model
        from train.quantize import quantize_openvino

        if want("openvino fp32"):
            started = time.perf_counter()
            load_encoder(resolve_model(None), backend="openvino")  # the export, cached for the runs below
            tiers.append(("openvino fp32", None, "openvino", time.perf_counter() - started))
        queries = pl.read_csv(WANDS, separator="\t", infer_schema=False)
        queries.select(pl.col("query").alias("name")).write_csv(tmp / "wands.csv")
        for label, calibration in (("WANDS queries", tmp / "wands.csv"), ("the run's source", vocabulary[1])):
            if not want(f"openvino int8 (calibrated on {label})"):
                continue
            quantized = quantize_openvino(tmp / f"int8-{calibration.stem}", calibration_files=[calibration])
            tiers.append((f"openvino int8 (calibrated on {label})", str(quantized.output_dir), "openvino",
                          quantized.seconds))
    else:
        log.warning("taxmig[openvino] is not installed: the OpenVINO tiers are left out")
    if importlib.util.find_spec("model2vec") and want("static"):
        plain = distill_static(tmp / "static", progress=False)
        tiers.append(("static (distilled, 256 dims)", str(plain.output_dir), "torch", plain.seconds))
        words = distill_static(tmp / "static-words", vocabulary_files=vocabulary, progress=False)
        tiers.append((f"static + {words.added_words} catalog words", str(words.output_dir), "torch", words.seconds))
    elif want("static"):
        log.warning("taxmig[static] is not installed: the static tiers are left out")
    return tiers


def encode_rate(model, texts: list[str]) -> float:
    return timed_encode(model, texts)[0]


def timed_encode(model, texts: list[str]) -> tuple[float, np.ndarray]:
    """(texts per second, the unit vectors) of one encode of ``texts``, batch 64, after a warm-up."""
    model.encode(texts[:64], batch_size=64, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started), vectors


def labelled_target(migrator, tmp: Path, limit: int | None) -> dict[str, float]:
    from migrate.mapping.settings import MigrationSettings

    target, source = bigbasket_split(limit)
    target_path, source_path = write_split(tmp, target, source)
    settings = MigrationSettings(source=source_path, target_catalog=target_path,
                                 target_category="category,sub_category", progress=False)
    started = time.perf_counter()
    result = migrator.run(settings)
    seconds = time.perf_counter() - started
    truth = dict(zip(source["index"], [f"{c} > {s}" for c, s in zip(source["category"], source["sub_category"])]))
    top1, _, unflagged, _ = evaluate(result.mapping, truth)
    # per second of the whole run, every product it embeds counted (source and target), as
    # bench/migrate_bench.py counts them: comparable with the raw encode rate
    return {"top1": float(top1.mean()), "unflagged_precision": unflagged_precision(top1, unflagged),
            "unflagged_share": float(unflagged.mean()),
            "products_per_s": (len(source) + len(target)) / seconds}


def zero_shot(migrator, tmp: Path, limit: int | None) -> dict[str, float]:
    from bench.zeroshot_bench import bigbasket_sets, instacart_set
    from migrate.mapping.settings import MigrationSettings

    out = {}
    for bench in (bigbasket_sets(limit)[0], instacart_set(limit)):
        source_path, taxonomy_path = tmp / f"zs-{bench['name']}.csv", tmp / f"zs-{bench['name']}.txt"
        bench["source"].write_csv(source_path)
        taxonomy_path.write_text("\n".join(bench["categories"]) + "\n")
        result = migrator.run(MigrationSettings(source=source_path, target_taxonomy=taxonomy_path,
                                                source_category=bench["source_category"], progress=False))
        predicted = result.mapping.sort("source_row")["target_category"].to_list()
        out[bench["name"]] = float(np.mean([p == t for p, t in zip(predicted, bench["truth"])]))
    return out


def match_f1(location: str | None, backend: str, tmp: Path, limit: int | None) -> float:
    from bench.match_bench import encoder, hybrid_features, hybrid_rows, load_inputs, prepare

    folder = prepare("abt_buy", limit, Path(tempfile.mkdtemp(dir=tmp)))  # a --limit copy per tier
    inputs, labels = load_inputs(folder)
    feats = hybrid_features(encoder(location, backend), inputs, labels, 10)
    return 100 * hybrid_rows("abt_buy", "tier", feats, labels, 0.0, kinds=("logistic",))[0].f1


def _cpu() -> str:
    """The CPU's model name and whether it has int8 dot products (VNNI, AMX) or bf16, from /proc/cpuinfo."""
    from models.registry import BF16_CPU_FLAGS, INT8_CPU_FLAGS, cpu_flags

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    flags = cpu_flags() or frozenset()
    return (f"{name}, int8 dot products: {', '.join(sorted(INT8_CPU_FLAGS & flags)) or 'none'}, "
            f"bf16: {', '.join(sorted(BF16_CPU_FLAGS & flags)) or 'none'}")


def _versions() -> str:
    import importlib.metadata

    found = []
    for package in ("torch", "transformers", "sentence-transformers", "openvino", "nncf", "onnxruntime", "model2vec"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def tiers_part(limit: int | None, wanted: list[str] | None = None) -> tuple[str, str]:
    from migrate.core.encoder import Encoder
    from migrate.mapping.pipeline import Migrator
    from models import load_encoder, resolve_model

    from models.registry import PRECISION_ENV

    # the baseline is torch in fp32: --precision auto would be bf16 on a CPU that computes it
    os.environ.setdefault(PRECISION_ENV, "fp32")
    target, source = bigbasket_split(limit)
    texts = text_of(pl.concat([target, source]))[:ENCODE_SAMPLE]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_split(tmp, target, source)
        vocabulary = [tmp / "target.csv", tmp / "source.csv"]
        torch_vectors = None
        for name, location, backend, built in tier_models(tmp, vocabulary, wanted):
            ref = resolve_model(location)
            model, fp = load_encoder(ref, backend=backend)
            migrator = Migrator(Encoder(model, ref.name, fp))
            rate, vectors = timed_encode(model, texts)
            torch_vectors = vectors if torch_vectors is None else torch_vectors
            # a static model's vectors live in another space: no cosine to the transformer's
            cosine = (vectors * torch_vectors).sum(axis=1) if vectors.shape == torch_vectors.shape else None
            row = {"tier": name, "built": built, "encode": rate,
                   "cosine": "--" if cosine is None or name.startswith("static") else
                   f"{cosine.min():.4f} / {cosine.mean():.4f}", **labelled_target(migrator, tmp, limit)}
            row.update({f"zs_{k}": v for k, v in zero_shot(migrator, tmp, limit).items()})
            row["match_f1"] = match_f1(location, backend, tmp, limit)
            rows.append(row)
            print(row, flush=True)
    base = rows[0]
    zs_keys = [k for k in base if k.startswith("zs_")]
    lines = ["| tier | encode texts/s | x torch | cosine to torch (lowest / mean) | labelled top-1 | "
             "unflagged precision | unflagged share | end-to-end products/s (x raw) | "
             + " | ".join(f"zero-shot top-1 {k[3:]}" for k in zs_keys) + " | Abt-Buy F1 | seconds to build |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(zs_keys) + "---|---|"]
    for r in rows:
        lines.append(f"| {r['tier']} | {r['encode']:.0f} | {r['encode'] / base['encode']:.2f}x | {r['cosine']} | "
                     f"{r['top1']:.3f} "
                     f"({(r['top1'] - base['top1']) * 100:+.1f}) | {r['unflagged_precision']:.3f} | "
                     f"{r['unflagged_share']:.3f} | {r['products_per_s']:.0f} ({r['products_per_s'] / r['encode']:.2f}x) | "
                     + " | ".join(f"{r[k]:.3f} ({(r[k] - base[k]) * 100:+.1f})" for k in zs_keys)
                     + f" | {r['match_f1']:.2f} ({r['match_f1'] - base['match_f1']:+.2f}) | {r['built']:.0f} |")
    notes = (f"Encode rate on {len(texts)} BigBasket texts (batch 64, after a warm-up); the cosine of each text's "
             "vector to torch fp32's. CPU: " + _cpu() + ". Labelled target: BigBasket "
             f"80/20 ({target.height} target products, {source.height} source; end to end: source and target "
             "products per second of the whole run -- reading, encoding both, the classifier, calibration and "
             "flags, not the model load). Zero-shot: taxonomy files only, "
             "self-trained, every row flagged. Abt-Buy: hybrid scorer weights fitted on train, threshold on "
             "valid, F1 (%) on test. Brackets: difference to torch fp32 in points. The catalog words come from "
             "the migration's own source and target files (no labels). Torch tiers in "
             f"{os.environ[PRECISION_ENV]} (${PRECISION_ENV}). Environment: " + _versions() + ".")
    return "\n".join(lines), notes


# --- part: million ---------------------------------------------------------------------------

def million_part(rows: int, torch_rows: int) -> tuple[str, str]:
    from train.distill import distill_static

    lines = ["| run | products | tier | wall s | products/s | peak RSS MB | exit |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        static = distill_static(tmp / "static", progress=False).output_dir
        source = perturbed_catalog(rows, tmp / "million.csv")
        runs = [("onto the BigBasket catalog (labelled)", rows, str(static),
                 ["--target-catalog", str(BIGBASKET), "--target-category", "category,sub_category"]),
                ("onto the Google taxonomy", rows, str(static), ["--target-taxonomy", str(GOOGLE)])]
        if torch_rows:
            head = tmp / "head.csv"
            pl.read_csv(source, n_rows=torch_rows, infer_schema=False).write_csv(head)
            runs.append(("onto the BigBasket catalog (labelled)", torch_rows, None,
                         ["--target-catalog", str(BIGBASKET), "--target-category", "category,sub_category"]))
        for name, n, model, target in runs:
            src = source if n == rows else tmp / "head.csv"
            out = tmp / f"out-{len(lines)}.parquet"
            args = ["migrate", str(src), *target, "-o", str(out), "--quiet", *(["--model", model] if model else [])]
            seconds, rss, code, tail, mapped = timed_migration(args, out)
            tier = "static" if model else "torch fp32"
            lines.append(f"| {name} | {n:,} (mapped {mapped:,}) | {tier} | {seconds:.0f} | {n / seconds:.0f} | "
                         f"{rss:.0f} | {code} |")
            print(lines[-1], tail if code else "", flush=True)
    notes = (f"Source: {rows:,} products from BigBasket's real rows, names perturbed after the first copy, ids "
             "unique (perturbed_catalog in the script); output Parquet. Wall time and peak RSS of the `taxmig "
             "migrate` child process, model load included. The static model is distilled from the bundled "
             "MiniLM in the run, without catalog words. Targets (issue 15): 1M within 30 minutes under 8 GB.")
    return "\n".join(lines), notes


# --- part: match ----------------------------------------------------------------------------

def match_part(left_rows: int, right_rows: int, tier: str, precision: str) -> tuple[str, str]:
    """``taxmig match LEFT RIGHT`` at scale (issue 38, item 3): the right table ``right_rows`` perturbed
    BigBasket products (:func:`perturbed_catalog`: every product in many perturbed copies, the hardest
    right table for blocking), the left table ``left_rows`` of them perturbed once more under new ids.
    Wall time and peak RSS of the child process; how many left products were paired with a copy of
    their own product (any copy: they are all twins). ``tier``: ``static`` (distilled in the run, as
    the million part does) or ``torch`` at ``precision``; beside it, the bundled transformer's encode
    rate on 5,000 of the texts and what encoding both tables with it would take."""
    from train.distill import distill_static

    lines = ["| left x right | tier | wall s | peak RSS MB | matches | left paired with a copy of its own product "
             "| exit |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = [] if tier == "torch" else ["--model", str(distill_static(tmp / "static", progress=False).output_dir)]
        right = perturbed_catalog(right_rows, tmp / "right.csv")
        rng = random.Random(1)
        frame = pl.read_csv(right, infer_schema=False)
        picked = frame[sorted(rng.sample(range(frame.height), left_rows))]
        words = [name.split() for name in picked["product"].to_list()]
        for w in words:  # one more perturbation: a word dropped or two swapped
            if len(w) > 2 and rng.random() < 0.5:
                w.pop(rng.randrange(len(w)))
            elif len(w) > 1:
                i = rng.randrange(len(w) - 1)
                w[i], w[i + 1] = w[i + 1], w[i]
        left = tmp / "left.csv"
        picked.with_columns(pl.Series("product", [" ".join(w) for w in words]),
                            pl.Series("id", [f"L{i}" for i in range(left_rows)]),
                            pl.Series("source", picked["id"])).write_csv(left)
        out = tmp / "matches.parquet"
        args = ["match", str(left), str(right), "-o", str(out), "--quiet", *model,
                *(["--precision", precision] if tier == "torch" else []),
                "--left-id", "id", "--left-text", "product", "--right-id", "id", "--right-text", "product"]
        seconds, rss, code, tail = run_child(args)
        matches = own = 0
        if out.exists():
            m = pl.read_parquet(out).filter(pl.col("is_match"))
            matches = m.height
            origin = dict(zip([f"L{i}" for i in range(left_rows)], picked["id"].to_list()))
            own = sum(1 for a, b in zip(m["left_id"], m["right_id"]) if origin[a].split("-")[0] == b.split("-")[0])
        name = "static (distilled)" if tier == "static" else f"torch {precision}"
        lines.append(f"| {left_rows:,} x {right_rows:,} | {name} | {seconds:.0f} | {rss:.0f} | {matches:,} | "
                     f"{own / left_rows:.1%} | {code} |")
        print(lines[-1], tail if code else "", flush=True)
        from migrate.core.encoder import EncoderSettings, load_model

        sample = frame["product"].head(5000).to_list()
        rate = encode_rate(load_model(EncoderSettings(precision=precision)).model, sample)
        total = left_rows + right_rows
        lines.append(f"\nThe bundled transformer (torch {precision}) on this machine: {rate:.0f} texts/s on 5,000 of "
                     f"the right texts, so encoding the {total:,} texts would take {total / rate / 60:.0f} min.")
        print(lines[-1], flush=True)
    notes = ("Right: BigBasket's real rows, each in many perturbed copies (perturbed_catalog in the script); left: a "
             "seeded sample of them perturbed once more under new ids, so every left product has many look-alikes "
             "and its own product's copies on the right. `taxmig match LEFT RIGHT -o matches.parquet --quiet "
             "--model STATIC` (or `--precision P`) in a child process, model load included. Target (issue 38): 100k x 1M "
             "in <= 45 min with the transformer, peak < 8 GB.")
    return "\n".join(lines), notes


# --- part: ray ------------------------------------------------------------------------------

SCORE_COLUMNS = ("confidence", "margin", "score", "alt1_score", "alt2_score", "nearest_similarity")


def agreement(local: pl.DataFrame, ray_mapping: pl.DataFrame) -> str:
    """How the Ray engine's mapping compares with the local one, in words for the table."""
    ray_mapping = ray_mapping.sort("source_row")
    if local.columns != ray_mapping.columns or local.height != ray_mapping.height:
        return f"DIFFERENT shape ({ray_mapping.height} vs {local.height} rows)"
    text = [c for c in local.columns if c not in SCORE_COLUMNS]
    differing = {c: int((local[c] != ray_mapping[c]).sum()) for c in text}
    worst = max(float((local[c] - ray_mapping[c]).abs().max()) for c in SCORE_COLUMNS)
    bad = {c: n for c, n in differing.items() if n}
    return (f"{'identical' if not bad else f'DIFFERENT {bad}'} in {len(text)} text/flag columns; "
            f"scores max abs diff {worst:.4f}")


def ray_part(million: int, rows: int, torch_rows: int) -> tuple[str, str]:
    from train.distill import distill_static

    lines = ["| tier | products | local engine s | ray engine s | ray / local | ray mapping vs local | "
             "vs local with one thread |", "|---|---|---|---|---|---|---|"]
    target = ["--target-catalog", str(BIGBASKET), "--target-category", "category,sub_category"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        static = distill_static(tmp / "static", progress=False).output_dir
        source = pl.read_csv(perturbed_catalog(max(rows, torch_rows), tmp / "source.csv"), infer_schema=False)
        for tier, model, n in (("static", str(static), rows), ("torch fp32", None, torch_rows)):
            if not n:
                continue
            src = tmp / f"source-{n}.parquet"
            source.head(n).write_parquet(src)
            model_args = ["--model", model] if model else []
            local_out, ray_out = tmp / f"local-{tier}.parquet", tmp / f"ray-{tier}"
            local_s, _, code_l, tail_l = run_child(["migrate", str(src), *target, "-o", str(local_out), "--quiet",
                                                    *model_args])
            ray_s, _, code_r, tail_r = run_child(["migrate", str(src), *target, "--engine", "ray", "-o", str(ray_out),
                                                  "--quiet", *model_args])
            # each actor computes with one thread: the local engine held to one thread is its reference
            one_out = tmp / f"local1-{tier}.parquet"
            _, _, code_1, tail_1 = run_child(["migrate", str(src), *target, "-o", str(one_out), "--quiet", *model_args],
                                             env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            if code_l or code_r or code_1:
                lines.append(f"| {tier} | {n:,} | exit {code_l} | exit {code_r} | | {tail_l} {tail_r} | {tail_1} |")
            else:
                got = pl.read_parquet(ray_out / "mapping")
                lines.append(f"| {tier} | {n:,} | {local_s:.0f} | {ray_s:.0f} | {ray_s / local_s:.2f} | "
                             f"{agreement(pl.read_parquet(local_out), got)} | "
                             f"{agreement(pl.read_parquet(one_out), got)} |")
            print(lines[-1], flush=True)
    notes = (f"Source: the first rows of the perturbed BigBasket file ({million:,}-row recipe, seed 0) as Parquet, "
             "onto the BigBasket catalog. Each engine is one `taxmig migrate` child process, model load, target "
             f"fit and a fresh local Ray included; the Ray engine ran {os.cpu_count()} actors (one per core) in "
             "tasks of 16,384 rows. Last column: the local engine run again with OMP_NUM_THREADS=1, the thread count of "
             "each actor -- float sums split over two threads round differently, which reorders exactly tied "
             "neighbours. On one machine Ray buys no speed -- the cores are the same -- it is there for clusters "
             "(RAY_ADDRESS).")
    return "\n".join(lines), notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="tiers,million", help="tiers, million, ray, match (comma-separated)")
    parser.add_argument("--limit", type=int, help="tiers: a random subset of this many products per set")
    parser.add_argument("--tiers", help="tiers: comma-separated name prefixes of the tiers to run besides torch fp32 "
                                        "(default: every tier this environment has)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="million: source products")
    parser.add_argument("--torch-rows", type=int, default=100_000,
                        help="million: products mapped with the transformer for its time per 100k (0: skip)")
    parser.add_argument("--ray-rows", type=int, default=100_000, help="ray: products mapped by both engines, static")
    parser.add_argument("--ray-torch-rows", type=int, default=20_000,
                        help="ray: products mapped by both engines with the transformer (0: skip)")
    parser.add_argument("--match-left", type=int, default=100_000, help="match: left products")
    parser.add_argument("--match-right", type=int, default=1_000_000, help="match: right products")
    parser.add_argument("--match-tier", default="static", choices=("static", "torch"), help="match: encoder tier")
    parser.add_argument("--match-precision", default="fp32", help="match: torch precision (fp32, bf16, ...)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = {p.strip() for p in args.parts.split(",")}
    if "tiers" in parts:
        wanted = [t.strip() for t in args.tiers.split(",") if t.strip()] if args.tiers else None
        table, notes = tiers_part(args.limit, wanted)
        publish("speed tiers: torch fp32 against OpenVINO, ONNX and distilled static models", table, notes,
                write=not args.no_write)
    if "million" in parts:
        table, notes = million_part(args.rows, args.torch_rows)
        publish(f"scale: {args.rows:,} products on one machine", table, notes, write=not args.no_write)
    if "match" in parts:
        table, notes = match_part(args.match_left, args.match_right, args.match_tier, args.match_precision)
        publish(f"scale: match {args.match_left:,} x {args.match_right:,} products", table, notes,
                write=not args.no_write)
    if "ray" in parts:
        table, notes = ray_part(args.rows, args.ray_rows, args.ray_torch_rows)
        publish("scale: --engine ray against the local engine", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
