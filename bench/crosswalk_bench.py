"""Crosswalk between two taxonomies: the plain baseline (each old path's nearest new path, both
embedded as one sentence with the same encoder) against ``taxmig crosswalk``'s method.

(a) BigBasket's two-level paths (category > sub_category, 99) onto Instacart's department > aisle
    (132, without missing/other). No truth exists: a random sample of 40 old categories (seed 0)
    is judged by hand in ``bench/judged/bigbasket_instacart.csv`` (columns ``plain_ok``,
    ``taxmig_ok``: 1 right, 0 wrong -- a right answer is the aisle a shopper would look in, or
    the broader aisle that holds the category when none is specific). Rows not yet judged are
    written there with empty verdicts and left out of the counts. taxmig uses the products
    (``--products``, at most ``--per-category`` products per category, seeded).
(b) Google's taxonomy (2021-09-21, 5,595) onto Shopify's (2025-01, 10,595) and back. Truth: an old
    category whose leaf name and parent's leaf name match exactly one new category's (5,258
    pairs). Every method gets those right (the new taxonomy holds a twin), so the exact-name
    shortcut is also hidden: for a random 400 of them (seed 0) the twin and its subtree are
    removed from that row's candidates, and the right answer is the twin's parent (the broader
    category that holds it); a sibling is wrong.

    python bench/crosswalk_bench.py              # both parts, appends to BENCHMARKS.md
    python bench/crosswalk_bench.py --parts a --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, DATA, ROOT, publish  # noqa: E402
from migrate.core.embedding import Embedder  # noqa: E402
from migrate.core.encoder import Encoder  # noqa: E402
from migrate.core.taxonomy import load_taxonomy  # noqa: E402
from migrate.mapping.labels import path_levels  # noqa: E402
from migrate.mapping.crosswalk import (CrosswalkScorer, CrosswalkSettings, crosswalk_flags, parent_path,  # noqa: E402
                               run_crosswalk)
from models import load_encoder, resolve_model  # noqa: E402

GOOGLE = DATA / "shopify_product_taxonomy" / "data" / "integrations" / "google" / "2021-09-21" / "full_names.yml"
SHOPIFY = DATA / "shopify_product_taxonomy" / "dist" / "en" / "categories.txt"
INSTACART = DATA / "instacart"
JUDGED = ROOT / "bench" / "judged" / "bigbasket_instacart.csv"
PARENT_BONUSES = (0.0, 0.5, 1.0)  # 0: plain whole-path cosine; 0.5: the default


def instacart_paths() -> list[str]:
    aisles = pl.read_csv(INSTACART / "aisles.csv")
    departments = pl.read_csv(INSTACART / "departments.csv")
    pairs = (pl.read_csv(INSTACART / "products.csv").join(aisles, on="aisle_id").join(departments, on="department_id")
             .select("department", "aisle").unique())
    return sorted(f"{d} > {a}" for d, a in pairs.iter_rows() if {d, a}.isdisjoint({"missing", "other"}))


def part_a(encoder: Encoder, per_category: int, sample: int, folder: Path) -> tuple[list[str], str]:
    frame = pl.read_csv(BIGBASKET, infer_schema=False).filter(
        pl.col("product").is_not_null() & pl.col("category").is_not_null() & pl.col("sub_category").is_not_null())
    frame = frame.with_columns(pl.concat_str([pl.col("category").str.strip_chars(), pl.col("sub_category")
                                             .str.strip_chars()], separator=" > ").alias("path"))
    old_paths = sorted(set(frame["path"]))
    products = (frame.sample(fraction=1.0, shuffle=True, seed=0)
                .filter(pl.int_range(pl.len()).over("path") < per_category).select("index", "product", "brand", "path"))
    (folder / "old.txt").write_text("\n".join(old_paths) + "\n")
    (folder / "new.txt").write_text("\n".join(instacart_paths()) + "\n")
    products.write_csv(folder / "products.csv")
    base = CrosswalkSettings(old=folder / "old.txt", new=folder / "new.txt", progress=False)
    plain = run_crosswalk(replace(base, parent_bonus=0.0), encoder).mapping
    ours = run_crosswalk(replace(base, products=folder / "products.csv", product_category="path"), encoder).mapping
    rng = np.random.default_rng(0)
    rows = sorted(rng.choice(len(old_paths), size=min(sample, len(old_paths)), replace=False).tolist())
    fresh = pl.DataFrame({"old_category": [old_paths[i] for i in rows],
                          "plain": [plain["target_category"][i] for i in rows],
                          "taxmig": [ours["target_category"][i] for i in rows],
                          "taxmig_flags": [ours["flags"][i] for i in rows],
                          "products": [int(ours["products"][i]) for i in rows]})
    if JUDGED.exists():
        judged = pl.read_csv(JUDGED, infer_schema=False)
        verdicts = {(r["old_category"], r["plain"], r["taxmig"]): (r["plain_ok"], r["taxmig_ok"], r.get("note"))
                    for r in judged.iter_rows(named=True)}
    else:
        verdicts = {}
    keys = list(zip(fresh["old_category"], fresh["plain"], fresh["taxmig"]))
    fresh = fresh.with_columns(pl.Series("plain_ok", [verdicts.get(k, (None,) * 3)[0] for k in keys], pl.String),
                               pl.Series("taxmig_ok", [verdicts.get(k, (None,) * 3)[1] for k in keys], pl.String),
                               pl.Series("note", [verdicts.get(k, (None,) * 3)[2] for k in keys], pl.String))
    JUDGED.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_csv(JUDGED)
    done = fresh.filter(pl.col("plain_ok").is_not_null() & pl.col("taxmig_ok").is_not_null())
    p_ok = int((done["plain_ok"] == "1").sum())
    t_ok = int((done["taxmig_ok"] == "1").sum())
    unflagged = done.filter(pl.col("taxmig_flags").fill_null("") == "")
    u_ok = int((unflagged["taxmig_ok"] == "1").sum())
    differ = int((fresh["plain"] != fresh["taxmig"]).sum())
    lines = [f"| (a) BigBasket > Instacart, {done.height} judged by hand | {p_ok}/{done.height} | "
             f"{t_ok}/{done.height} | {unflagged.height}/{done.height} unflagged, {u_ok} right |"]
    note = (f"(a): {len(old_paths)} old categories, taxmig with up to {per_category} products each "
            f"({products.height} in all); the two differ on {differ} of the {fresh.height} sampled rows; verdicts "
            f"in {JUDGED.relative_to(ROOT)}.")
    return lines, note


def twin_truth(old: list[str], new: list[str]) -> dict[int, int]:
    """Old category -> the one new category with the same leaf name and parent leaf name."""
    def key(c: str) -> tuple[str, str]:
        levels = [x.lower() for x in path_levels(c)]
        return levels[-1], levels[-2] if len(levels) > 1 else ""

    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, c in enumerate(new):
        by_key[key(c)].append(j)
    return {i: by_key[key(c)][0] for i, c in enumerate(old) if len(by_key[key(c)]) == 1}


def part_b(encoder: Encoder, hidden: int) -> tuple[list[str], str]:
    google, shopify = load_taxonomy(GOOGLE).categories, load_taxonomy(SHOPIFY).categories
    embedder = Embedder(encoder.model, progress=False)
    started = time.perf_counter()
    vectors = embedder.encode([*google, *shopify])
    seconds = time.perf_counter() - started
    g_vec, s_vec = vectors[:len(google)], vectors[len(google):]
    lines, notes = [], []
    for name, old, new, old_vec, new_vec in (("Google > Shopify", google, shopify, g_vec, s_vec),
                                            ("Shopify > Google", shopify, google, s_vec, g_vec)):
        truth = twin_truth(old, new)
        new_index = {c: j for j, c in enumerate(new)}
        eligible = [i for i in truth if parent_path(new[truth[i]]) in new_index]
        rows = sorted(np.random.default_rng(0).choice(eligible, size=min(hidden, len(eligible)),
                                                      replace=False).tolist())
        mask = {i: np.array([j for j, c in enumerate(new) if c == new[truth[i]] or c.startswith(new[truth[i]] + " > ")])
                for i in rows}
        hidden_truth = {i: new_index[parent_path(new[truth[i]])] for i in rows}
        t_idx = np.array(sorted(truth))
        t_true = np.array([truth[i] for i in t_idx])
        result = {}
        for bonus in PARENT_BONUSES:
            settings = CrosswalkSettings(old="-", new="-", parent_bonus=bonus)
            scorer = CrosswalkScorer(old, new, old_vec, new_vec, parent_bonus=bonus)
            cand, scores, path, landing = scorer.score()
            flags = crosswalk_flags(scorer, cand, scores, path, landing, settings)
            right = cand[t_idx, 0] == t_true
            unflagged = np.array([not flags[i] for i in t_idx])
            h_cand = scorer.score(mask=mask)[0]
            h_right = np.array([h_cand[i, 0] == hidden_truth[i] for i in rows])
            result[bonus] = (right.mean(), unflagged.mean(), right[unflagged].mean() if unflagged.any() else float("nan"),
                             h_right.mean(), int(len(rows)))
        plain, ours = result[0.0], result[CrosswalkSettings.parent_bonus]
        lines.append(f"| (b) {name}, twins present ({len(truth)} with truth) | {plain[0]:.3f} | {ours[0]:.3f} | "
                     f"{ours[1]:.1%} unflagged at precision {ours[2]:.3f} (plain + same flags: {plain[1]:.1%} at "
                     f"{plain[2]:.3f}) |")
        lines.append(f"| (b) {name}, twin hidden ({ours[4]} rows; truth = twin's parent) | {plain[3]:.3f} | "
                     f"{ours[3]:.3f} | parent bonus 1.0: {result[1.0][3]:.3f} (twins present {result[1.0][0]:.3f}) |")
    notes.append(f"(b): {len(google):,} Google and {len(shopify):,} Shopify paths encoded once in {seconds:.0f} s.")
    return lines, " ".join(notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b", help="which parts to run: a, b or a,b")
    parser.add_argument("--per-category", type=int, default=30, help="(a) products per BigBasket category used")
    parser.add_argument("--sample", type=int, default=40, help="(a) old categories judged by hand")
    parser.add_argument("--hidden", type=int, default=400, help="(b) truth rows whose twin is hidden")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ref = resolve_model(None)
    model, fp = load_encoder(ref)
    encoder = Encoder(model, ref.name, fp)
    lines = ["| pair | plain top-1 | taxmig top-1 | flags (taxmig) |", "|---|---|---|---|"]
    notes = []
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    if "a" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            rows, note = part_a(encoder, args.per_category, args.sample, Path(tmp))
        lines += rows
        notes.append(note)
    if "b" in parts:
        rows, note = part_b(encoder, args.hidden)
        lines += rows
        notes.append(note)
    notes.append(f"Plain: each old path's nearest new path by cosine (same encoder: the bundled base model). "
                 f"taxmig: `taxmig crosswalk` defaults (parent bonus {CrosswalkSettings.parent_bonus} x (1 - best "
                 f"path cosine); products with weight {CrosswalkSettings.product_weight} in (a)). Whole run "
                 f"{time.perf_counter() - started:.0f} s.")
    publish("crosswalk: plain nearest path vs taxmig crosswalk", "\n".join(lines), " ".join(notes),
            write=not args.no_write)


if __name__ == "__main__":
    main()
