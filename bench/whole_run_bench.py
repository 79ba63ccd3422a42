"""Whole runs, not encode rates: where a migration's seconds go, per speed tier, first and second run.

A user who picks a fast tier wants a faster migration, not a faster encoder. This bench runs whole
migrations in-process (the model loaded beforehand, its load reported apart; writing the workbook
included) side by side in one go, per tier:

* ``800 onto 22k``: the first 800 products of BigBasket's held-out 20% onto the labelled 80%
  (22,085 products; bench/common.py's split) -- a few hundred products onto a big labelled target;
* ``80/20``: all 5,470 held-out products onto the same target (bench/migrate_bench.py's split),
  with the whole run's products per second (source and target) against the tier's raw encode rate
  on the run's own texts (a seeded sample of the source and target texts the run embeds);
* ``Google``: the first 2,000 BigBasket products onto Google's 5,595 category paths (a taxonomy
  file, no labelled product; self-trained).

Each run twice with an empty user cache at the start (``TAXMIG_CACHE_DIR``, a fresh folder per
tier and case): the first run fits the target side or encodes the category texts and keeps them;
the second reads them back (``taxmig migrate`` with its default ``--target-cache`` /
``--category-cache``) and maps only the source. Tiers: torch fp32, torch bf16 (where the CPU
computes bf16: what ``--precision auto`` picks there), OpenVINO fp32 (``--backend openvino``, the base
model's IR) and int8 from ``taxmig quantize --backend openvino`` (where taxmig[openvino] is installed),
ONNX fp32 (``--backend onnx``, the base model's fused export) and int8 from ``taxmig quantize --backend
onnx`` (where taxmig[onnx] is), and the static model from ``taxmig distill`` (where taxmig[static] is);
``--tiers`` picks some.
The seconds by stage are the run's own (``RunFacts.stage_seconds``, the progress display's stages).

With ``--million``: instead, a million products with the transformer (the default tier: torch,
``--precision auto``; with ``--int8``, the int8 copy ``taxmig quantize`` writes on this CPU) onto
the BigBasket catalog (labelled) and onto Google's taxonomy, each one
``taxmig migrate`` child process (model load, reading and writing Parquet included): wall time and
peak RSS (``os.wait4``); the source is bench/scale_bench.py's perturbed million.

    python bench/whole_run_bench.py                        # every case, appends to BENCHMARKS.md
    python bench/whole_run_bench.py --cases 800 --no-write
    python bench/whole_run_bench.py --cases 800,google --tiers "openvino fp32,openvino int8"
    python bench/whole_run_bench.py --cases 800,80/20,google --tiers "openvino int8,onnx fp32,onnx int8"
    python bench/whole_run_bench.py --million [--rows 1000000] [--targets catalog,google] [--int8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BIGBASKET, DATA, bigbasket_split, publish, write_split  # noqa: E402

GOOGLE = DATA / "google_product_taxonomy" / "taxonomy-with-ids.en-US.txt"
ENCODE_SAMPLE = 5000
CASES = ("800", "80/20", "google")
STAGES = ("reading", "encoding the target catalog", "encoding categories", "fitting the classifier", "calibrating",
          "encoding products", "scoring", "self-training", "writing")


def tiers(tmp: Path, source_for_calibration: Path, wanted: set[str] | None = None) -> list[tuple[str, dict, float]]:
    """(name, encoder settings, seconds to build) of every tier this environment has (of ``wanted``
    only, when given: a tier left out is not built)."""
    from models.registry import cpu_computes_bf16

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    out = [("torch fp32", {"precision": "fp32"}, 0.0)]
    if cpu_computes_bf16() and want("torch bf16 (auto here)"):
        out.append(("torch bf16 (auto here)", {"precision": "bf16"}, 0.0))
    try:
        import openvino  # noqa: F401

        if want("openvino fp32"):  # the base model's IR, exported when loaded
            out.append(("openvino fp32", {"backend": "openvino"}, 0.0))
        if want("openvino int8"):
            from train.quantize import quantize_openvino

            built = quantize_openvino(tmp / "int8", calibration_files=[source_for_calibration])
            out.append(("openvino int8", {"model": str(built.output_dir), "backend": "openvino"}, built.seconds))
    except ImportError:
        logging.warning("no OpenVINO here: the OpenVINO tiers are left out")
    try:
        import onnxruntime  # noqa: F401

        if want("onnx fp32"):  # the base model's fused ONNX export, made when loaded
            out.append(("onnx fp32", {"backend": "onnx"}, 0.0))
        if want("onnx int8"):
            from train.quantize import quantize_onnx

            built = quantize_onnx(tmp / "onnx-int8")
            out.append(("onnx int8", {"model": str(built.output_dir), "backend": "onnx"}, built.seconds))
    except ImportError:
        logging.warning("no onnxruntime here: the ONNX tiers are left out")
    if want("static (distilled)"):
        try:
            from train.distill import distill_static

            built = distill_static(tmp / "static", progress=False)
            out.append(("static (distilled)", {"model": str(built.output_dir), "precision": "fp32"}, built.seconds))
        except ImportError:
            logging.warning("no model2vec here: the static tier is left out")
    return out


def encode_rate(model, texts: list[str], batch_size: int = 64) -> float:
    model.encode(texts[:256], batch_size=batch_size, normalize_embeddings=True)
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - started)


def one_run(migrator, settings, out: Path) -> dict:
    """A whole migration in-process (written to ``out``): seconds, seconds by stage, the mapping."""
    from migrate.core.progress import Progress
    from migrate.mapping.output import write_output

    started = time.perf_counter()
    with Progress(False) as display:
        result = migrator.run(settings)
        with display.stage("writing", total=1, unit="files"):
            write_output(result, out, overwrite=True)
        stages = display.seconds_by_stage()
    return {"seconds": time.perf_counter() - started, "stages": stages, "mapping": result.mapping,
            "encoded": result.facts.encoded, "target_side": result.facts.target_side}


def million(rows: int, targets: list[str], write: bool, batch_size: int | None = None, int8: bool = False) -> None:
    """``rows`` products with the default tier (``int8``: ``taxmig quantize``'s int8 of the bundled
    model, the backend it picks here) onto each of ``targets`` (catalog, google), CLI child processes."""
    from bench.scale_bench import perturbed_catalog, timed_migration
    from models.registry import resolve_precision

    lines = ["| run | products | tier | wall s | minutes | products/s | peak RSS MB | exit | seconds by stage |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    tier = f"torch {resolve_precision('auto')} (--precision auto)"
    tier += f", --batch-size {batch_size}" if batch_size else ""
    batch = ["--batch-size", str(batch_size)] if batch_size else []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if int8:
            from train.quantize import int8_backend_here, quantize_onnx, quantize_openvino

            backend = int8_backend_here()
            built = (quantize_onnx(tmp / "int8") if backend == "onnx" else
                     quantize_openvino(tmp / "int8", calibration_files=[BIGBASKET], progress=False))
            tier = f"{backend} int8 (taxmig quantize, built in {built.seconds:.0f} s)"
            batch += ["--model", str(built.output_dir), "--backend", backend]
        source = perturbed_catalog(rows, tmp / "million.csv")
        for target in targets:
            name, options = (("onto the BigBasket catalog (labelled, 27,554 products)",
                              ["--target-catalog", str(BIGBASKET), "--target-category", "category,sub_category"])
                             if target == "catalog" else
                             ("onto Google's taxonomy (5,595 categories)", ["--target-taxonomy", str(GOOGLE)]))
            out = tmp / f"out-{target}.parquet"
            seconds, rss, code, tail, mapped = timed_migration(
                ["migrate", str(source), *options, "-o", str(out), "--quiet", *batch], out,
                env={"TAXMIG_CACHE_DIR": str(tmp / f"cache-{target}")})
            summary = out.with_name(f"{out.stem}.summary.json")
            stages = json.loads(summary.read_text())["facts"].get("stage_seconds", {}) if summary.exists() else {}
            profile = ", ".join(f"{stage} {s:.0f}" for stage, s in sorted(stages.items(), key=lambda kv: -kv[1]))
            lines.append(f"| {name} | {rows:,} (mapped {mapped:,}) | {tier} | {seconds:.0f} | {seconds / 60:.1f} | "
                         f"{rows / seconds:,.0f} | {rss:,.0f} | {code} | {profile} |")
            print(lines[-1], tail if code else "", flush=True)
    notes = (f"Source: {rows:,} products from BigBasket's real rows, names perturbed after the first copy, ids unique "
             "(bench/scale_bench.py perturbed_catalog); output Parquet; an empty user cache for each run. Wall time "
             "and peak RSS of the `taxmig migrate` child process, model load included. Target (issue 39): under 20 "
             "minutes and 8 GB each.")
    print("\n".join(lines))
    publish(f"whole runs: {rows:,} products with the transformer (issue 39)", "\n".join(lines), notes, write=write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--google-products", type=int, default=2000)
    parser.add_argument("--million", action="store_true", help="a million products with the transformer instead")
    parser.add_argument("--rows", type=int, default=1_000_000, help="--million: source products")
    parser.add_argument("--targets", default="catalog,google", help="--million: catalog, google (comma-separated)")
    parser.add_argument("--batch-size", type=int, help="--million: taxmig's --batch-size (default: its own)")
    parser.add_argument("--int8", action="store_true",
                        help="--million: taxmig quantize's int8 (the backend it picks on this CPU) instead of torch")
    parser.add_argument("--tiers", default=None,
                        help="comma-separated tier names to run besides torch fp32 (the ratios' base), e.g. "
                             "'openvino fp32,openvino int8' (default: every tier this environment has)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.million:
        logging.basicConfig(level=logging.WARNING)
        million(args.rows, [t.strip() for t in args.targets.split(",") if t.strip()], write=not args.no_write,
                batch_size=args.batch_size, int8=args.int8)
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import polars as pl

    from bench.migrate_bench import evaluate, unflagged_precision
    from migrate.core.encoder import EncoderSettings
    from migrate.mapping.inputs import read_inputs
    from migrate.mapping.pipeline import Migrator
    from migrate.mapping.settings import MigrationSettings

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        target, source = bigbasket_split()
        target_path, source_path = write_split(tmp, target, source)
        small_path = tmp / "source800.csv"
        source.head(800).select(["index", "product", "brand"]).write_csv(small_path)
        google_source = tmp / "google_source.csv"
        pl.read_csv(BIGBASKET, infer_schema=False, n_rows=args.google_products).select(
            ["index", "product", "brand"]).write_csv(google_source)
        truth = dict(zip(source["index"], [f"{c} > {s}" for c, s in zip(source["category"], source["sub_category"])]))
        sample_texts = pl.read_csv(BIGBASKET, infer_schema=False)["product"].drop_nulls().sample(
            n=ENCODE_SAMPLE, seed=0).to_list()
        case_settings = {
            "800": dict(source=small_path, target_catalog=target_path, target_category="category,sub_category"),
            "80/20": dict(source=source_path, target_catalog=target_path, target_category="category,sub_category"),
            "google": dict(source=google_source, target_taxonomy=GOOGLE),
        }
        run_inputs = read_inputs(MigrationSettings(**case_settings["80/20"]))
        run_texts = run_inputs.source.texts + run_inputs.targets.catalog.texts
        run_sample = [run_texts[i] for i in np.random.default_rng(0).choice(len(run_texts), ENCODE_SAMPLE,
                                                                              replace=False)]
        rows, profile = [], []
        base: dict[tuple[str, str], float] = {}
        wanted = None if args.tiers is None else {"torch fp32", *(t.strip() for t in args.tiers.split(","))}
        for tier, encoder_fields, build_s in tiers(tmp, source_path, wanted):
            encoder = EncoderSettings(**encoder_fields)
            started = time.perf_counter()
            migrator = Migrator.from_settings(MigrationSettings(source=small_path, target_taxonomy=GOOGLE,
                                                                encoder=encoder))
            load_s = time.perf_counter() - started
            rate = encode_rate(migrator.encoder.model, sample_texts)
            run_rate = encode_rate(migrator.encoder.model, run_sample) if "80/20" in cases else float("nan")
            for case in cases:
                settings = MigrationSettings(**case_settings[case], encoder=encoder, progress=False)
                cache = tmp / f"cache-{tier.split()[0]}-{tier.split()[1]}-{case.replace('/', '-')}"
                os.environ["TAXMIG_CACHE_DIR"] = str(cache)
                runs = [one_run(migrator, settings, tmp / f"out-{i}.xlsx") for i in (1, 2)]
                first, second = runs
                same = first["mapping"].select("source_id", "target_category", "flags").equals(
                    second["mapping"].select("source_id", "target_category", "flags"))
                top1 = unflagged = None
                if case != "google":
                    hit, _, unflag, _ = evaluate(first["mapping"], truth)
                    top1, unflagged = float(hit.mean()), (unflagged_precision(hit, unflag), float(unflag.mean()))
                for label, run in (("first", first), ("second", second)):
                    base_key = (case, label)
                    if tier == "torch fp32":
                        base[base_key] = run["seconds"]
                    n_products = len(source) + len(target) if case == "80/20" else None
                    per_s = f"{n_products / run['seconds']:,.0f} ({n_products / run['seconds'] / run_rate:.2f}x)" \
                        if n_products and label == "first" else "--"
                    rows.append(f"| {case} | {tier} | {label} | {run['seconds']:.1f} | "
                                f"{base[base_key] / run['seconds']:.2f}x | {run['encoded']:,} | {per_s} | "
                                + (f"{top1:.3f} | {unflagged[0]:.3f} / {unflagged[1]:.3f} | " if top1 is not None
                                   else "-- | -- | ")
                                + ("same as the first" if label == "second" and same else
                                   "DIFFERENT" if label == "second" else "") + " |")
                    stage_cells = [f"{run['stages'].get(s, 0.0):.1f}" for s in STAGES]
                    other = run["seconds"] - sum(run["stages"].get(s, 0.0) for s in STAGES)
                    profile.append(f"| {case} | {tier} | {label} | {run['seconds']:.1f} | "
                                   + " | ".join(stage_cells) + f" | {other:.1f} |")
                print(rows[-2], rows[-1], sep="\n", flush=True)
            rows.append(f"| (tier) | {tier} | model load {load_s:.1f} s, built in {build_s:.0f} s | -- | -- | -- | "
                        f"raw encode {rate:,.0f} texts/s (names), {run_rate:,.0f} (80/20's texts) | -- | -- | |")
            del migrator
        os.environ.pop("TAXMIG_CACHE_DIR", None)

    head = ("| case | tier | run | seconds | x torch fp32 | texts encoded | products/s (x raw encode) | top-1 | "
            "unflagged precision / share | second run's mapping |\n|---|---|---|---:|---:|---:|---:|---:|---|---|\n")
    prof_head = ("| case | tier | run | seconds | " + " | ".join(STAGES) + " | other |\n|---|---|---|---:|"
                 + "---:|" * (len(STAGES) + 1) + "\n")
    table = head + "\n".join(rows) + "\n\nWhere the seconds go (the run's own stages; other: what no stage covers)\n\n" \
        + prof_head + "\n".join(profile)
    import platform

    import torch

    notes = (f"800 onto 22k: the first 800 of BigBasket's held-out 20% onto the labelled 80% (22,085 products); "
             f"80/20: all 5,470 onto it (products/s counts source and target products of the first run against "
             f"the tier's raw encode rate on {ENCODE_SAMPLE:,} of the run's own texts, source and target, batch 64; "
             f"the tier row also gives the rate on {ENCODE_SAMPLE:,} BigBasket names); google: the first "
             f"{args.google_products:,} BigBasket products onto Google's 5,595 paths. Each run in-process, model "
             f"loaded beforehand, the workbook written (.xlsx); first run with an empty user cache, second run "
             f"reading the target side / category texts the first kept. CPU: {platform.processor() or 'x86_64'}, "
             f"torch {torch.__version__}.")
    print(table)
    print(notes)
    publish("whole runs: where the seconds go, per speed tier (issue 39)", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
