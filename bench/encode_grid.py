"""Where encoding time goes: texts/s per device, precision and batch size, beside the tokenizer
alone (what the encoder cannot beat). Reads BigBasket's product names with the csv module and loads
the model with ``models.load_encoder`` only, so it runs where torch and sentence-transformers are
installed and taxmig's other dependencies are not (a lent GPU machine with no registry).

    python bench/encode_grid.py                                   # cuda when present, else cpu
    python bench/encode_grid.py --device cpu --precisions fp32,bf16 --batch-sizes 64,256
    python bench/encode_grid.py --model /path/to/model --data /path/to/products.csv --no-write
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def product_names(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["product"] for row in csv.DictReader(fh) if row.get("product")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TAXMIG_DATA_DIR", ROOT.parent / "shared" / "data"))
                        / "bigbasket" / "products.csv")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--limit", type=int, default=None, help="the first N names only (a smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from models import load_encoder, resolve_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    texts = product_names(args.data)[:args.limit]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    lines = ["| precision | " + " | ".join(f"batch {b} texts/s" for b in sizes) + " | tokenizer alone, texts/s |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for precision in args.precisions.split(","):
        model, _ = load_encoder(resolve_model(args.model), device=device, precision=precision)
        rates = []
        for b in sizes:
            model.encode(texts[:b], batch_size=b)  # warm-up
            started = time.perf_counter()  # the vectors come back as numpy: the GPU has finished
            model.encode(texts, batch_size=b, normalize_embeddings=True, convert_to_numpy=True)
            rates.append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for i in range(0, len(texts), 256):
            model.preprocess(texts[i:i + 256]) if hasattr(model, "preprocess") else model.tokenize(texts[i:i + 256])
        tokenizer = len(texts) / (time.perf_counter() - started)
        lines.append(f"| {precision} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {tokenizer:,.0f} |")
        print(lines[-1], flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    notes = (f"Device {device} (GPU: {gpu}); {len(texts):,} BigBasket product names; each rate after a warm-up "
             "batch; the tokenizer column is the model's own preprocessing of the same names in batches of 256, "
             f"no model call. torch {torch.__version__}.")
    from bench.common import append_benchmark

    table = "\n".join(lines)
    print(table)
    print(notes)
    if not args.no_write:
        print("appended to", append_benchmark(f"encode grid ({device})", table, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
