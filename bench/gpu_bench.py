"""The transformer per device and precision, in one run: encode rate and mapping results
(``--device cuda``, ``--precision fp16|bf16``; README "GPU" and "Speed tiers").

Rows (``--runs``): by default CPU fp32 (the reference), CUDA fp32, CUDA fp16, CUDA bf16, all with
the bundled all-MiniLM-L6-v2; ``--runs cpu:fp32,cpu:bf16`` compares precisions on the CPU alone
(bf16 is fast where the CPU has AMX or AVX512-BF16); ``cpu:fp32:torchscript`` runs the model's
TorchScript trace without sentence-transformers, as nightly runs do (models/runtime.py). Per row: the raw encode rate on every BigBasket text (batch ``--batch-size``,
after a warm-up); the labelled-target migration BigBasket 80/20 (bench/common.py split: top-1,
unflagged precision and share, products/s end to end); zero-shot BigBasket two-level and Instacart
aisles (bench/zeroshot_bench.py's sets, self-trained); and how many of the labelled run's rows name
the same category and carry the same flags as the first run. Exits 2 when a run asks for CUDA on a
machine without it.

    python bench/gpu_bench.py                  # appends to BENCHMARKS.md
    python bench/gpu_bench.py --runs cpu:fp32,cpu:bf16
    python bench/gpu_bench.py --runs cpu:fp32,cpu:fp32:torchscript
    python bench/gpu_bench.py --limit 3000 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bigbasket_split, publish, write_split  # noqa: E402
from bench.migrate_bench import evaluate, text_of, unflagged_precision  # noqa: E402
from bench.scale_bench import zero_shot  # noqa: E402

RUNS = "cpu:fp32,cuda:fp32,cuda:fp16,cuda:bf16"


def encode_rate(model, texts: list[str], batch_size: int) -> float:
    # the vectors come back as numpy: each timing ends after the GPU has finished
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


def labelled(migrator, tmp: Path, target: pl.DataFrame, source: pl.DataFrame, batch_size: int):
    from migrate.core.encoder import EncoderSettings
    from migrate.mapping.settings import MigrationSettings

    target_path, source_path = write_split(tmp, target, source)
    settings = MigrationSettings(source=source_path, target_catalog=target_path,
                                 target_category="category,sub_category", progress=False,
                                 encoder=EncoderSettings(batch_size=batch_size))
    started = time.perf_counter()
    result = migrator.run(settings)
    seconds = time.perf_counter() - started
    truth = dict(zip(source["index"], [f"{c} > {s}" for c, s in zip(source["category"], source["sub_category"])]))
    top1, _, unflagged, _ = evaluate(result.mapping, truth)
    return result.mapping, {"top1": float(top1.mean()), "unflagged_precision": unflagged_precision(top1, unflagged),
                            "unflagged_share": float(unflagged.mean()),
                            "products_per_s": (source.height + target.height) / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="a random subset of this many products per set")
    parser.add_argument("--batch-size", type=int, default=256, help="encode batch (the GPU wants large ones)")
    parser.add_argument("--runs", default=RUNS, help="device:precision pairs, the first the reference")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from migrate.core.encoder import Encoder
    from migrate.core.index import gpu_count
    from migrate.mapping.pipeline import Migrator
    from models import load_encoder, resolve_model

    runs = [(*run.split(":"), "")[:3] for run in args.runs.split(",")]
    if any(device == "cuda" for device, _, _ in runs) and not torch.cuda.is_available():
        print("no CUDA GPU here: pass --runs cpu:fp32,cpu:bf16 to compare precisions on the CPU", file=sys.stderr)
        return 2
    target, source = bigbasket_split(args.limit)
    texts = text_of(pl.concat([target, source]))
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for device, precision, engine in runs:
            ref = resolve_model(None)
            model, fp = load_encoder(ref, device=device, precision=precision)
            if engine == "torchscript":  # the trace a night runs, made from the model just loaded
                from models.runtime import TorchScriptRuntimeEncoder, export_torchscript

                (tmp / "trace").mkdir()
                export_torchscript(model, ref.location, tmp / "trace")
                model = TorchScriptRuntimeEncoder(tmp / "trace")
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            migrator = Migrator(Encoder(model, ref.name, fp))
            row = {"run": " ".join(x for x in (device, precision, engine) if x), "encode": encode_rate(model, texts, args.batch_size)}
            mapping, scores = labelled(migrator, tmp, target, source, args.batch_size)
            row.update(scores)
            row.update({f"zs_{k}": v for k, v in zero_shot(migrator, tmp, args.limit).items()})
            row["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
            mapping = mapping.sort("source_row")
            if reference is None:
                reference = mapping
            row["same_category"] = float(np.mean(np.array(mapping["target_category"].to_list(), dtype=object)
                                                 == np.array(reference["target_category"].to_list(), dtype=object)))
            row["same_flags"] = float(np.mean(np.array(mapping["flags"].to_list(), dtype=object)
                                              == np.array(reference["flags"].to_list(), dtype=object)))
            rows.append(row)
            print(row, flush=True)
            del model, migrator
            if device == "cuda":
                torch.cuda.empty_cache()
    base = rows[0]
    zs_keys = [k for k in base if k.startswith("zs_")]
    lines = [f"| run | encode texts/s | x {base['run']} | labelled top-1 | unflagged precision | unflagged share | "
             "end-to-end products/s | " + " | ".join(f"zero-shot top-1 {k[3:]}" for k in zs_keys)
             + f" | same category as {base['run']} | same flags | peak GPU MB |",
             "|---|---|---|---|---|---|---|" + "---|" * len(zs_keys) + "---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['encode']:.0f} | {r['encode'] / base['encode']:.1f}x | {r['top1']:.3f} "
                     f"({(r['top1'] - base['top1']) * 100:+.1f}) | {r['unflagged_precision']:.3f} | "
                     f"{r['unflagged_share']:.3f} | {r['products_per_s']:.0f} | "
                     + " | ".join(f"{r[k]:.3f} ({(r[k] - base[k]) * 100:+.1f})" for k in zs_keys)
                     + f" | {r['same_category']:.4f} | {r['same_flags']:.4f} | {r['gpu_mb']:.0f} |")
    import importlib.metadata

    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "transformers",
                                                                          "sentence-transformers", "faiss-cpu")
                         if _installed(p))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    notes = (f"GPU: {gpu}; faiss sees {gpu_count()} GPU(s) (0: faiss-cpu, the "
             f"index searched on the CPU). Encode rate on all {len(texts)} BigBasket texts, batch {args.batch_size}. "
             f"Labelled: BigBasket 80/20 ({target.height} target products, {source.height} source), products/s "
             "end to end counts source and target products per second of the run (model load excluded). "
             "Zero-shot: taxonomy files only, self-trained. Brackets: points against the first run. "
             "Same category / flags: share of the labelled run's rows equal to the first run's. CPU: "
             f"{_cpu()}. Environment: "
             + versions + ".")
    title = ("GPU: CUDA against the CPU, BigBasket" if any(d == "cuda" for d, _, _ in runs)
             else "the TorchScript trace against sentence-transformers, BigBasket and Instacart"
             if any(e for _, _, e in runs) else "torch precisions on the CPU, BigBasket")
    publish(title, "\n".join(lines), notes, write=not args.no_write)
    return 0


def _cpu() -> str:
    """The CPU's model name and its bf16 matrix instructions, as /proc/cpuinfo names them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name} ({', '.join(f for f in ('avx512_bf16', 'amx_bf16') if f in flags) or 'no bf16 instructions'})"


def _installed(package: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
