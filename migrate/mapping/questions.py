"""Which questions a round of review asks: the answers that would move the most other rows first,
and a share of random checks that measure the suggestions as they are
(:func:`migrate.mapping.feedback.unflag_threshold` reads them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ASK_SHARE = 0.02  # the default --ask: this share of the products, within ASK_BOUNDS
ASK_BOUNDS = (20, 500)
UNCERTAIN_SHARE = 0.5
"""Questions are drawn from the least confident half of the open rows (bench/review_rounds.py)."""
AUDIT_SHARE = 0.1
"""This share of the questions are open rows drawn at random: a check of the suggestions as they
are, which the next round measures their accuracy on without the bias of the chosen questions."""
AUDIT_FROM = 0.5
"""The random checks are drawn from this most confident share of the open rows: the rows a
threshold would leave unflagged, whose precision is the one to measure (bench/review_rounds.py:
more rows unflagged at the same precision than with checks drawn from every open row)."""
WHY_CLUSTER = "stands for {n} similar open products"
WHY_AUDIT = "random check of the suggestions"


def default_ask(products: int) -> int:
    """The questions a round asks for when ``--ask`` is not given (:data:`ASK_SHARE`, :data:`ASK_BOUNDS`)."""
    low, high = ASK_BOUNDS
    return int(min(max(low, round(ASK_SHARE * products)), high, products))


@dataclass
class Questions:
    """The rows a round asks a person about, in asking order, and why each."""

    rows: np.ndarray     # positions in the mapping
    why: list[str]
    audit: np.ndarray    # (len(rows),) bool: a random check, not a chosen question


def choose_questions(vectors: np.ndarray, confidence: np.ndarray, open_rows: np.ndarray, n: int,
                     seed: int = 0) -> Questions:
    """Up to ``n`` questions among ``open_rows`` (positions): the answers that would move the most
    other rows first. The least confident :data:`UNCERTAIN_SHARE` of the open rows are clustered
    into as many groups as there are questions to choose (k-means on the unit embeddings);
    each group asks once, through the product nearest its centre, the groups with the most
    uncertainty (their rows' summed 1 - confidence) first -- one question for 50 near-duplicates,
    not 50. :data:`AUDIT_SHARE` of the questions are random checks (:data:`WHY_AUDIT`): open rows
    drawn at random among the most confident :data:`AUDIT_FROM` of them."""
    from sklearn.cluster import KMeans

    open_rows = np.asarray(open_rows, dtype=np.int64)
    n = int(min(n, len(open_rows)))
    if n <= 0:
        return Questions(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=bool))
    rng = np.random.default_rng(seed)
    n_audit = int(round(AUDIT_SHARE * n)) if n >= 10 else 0
    confident = open_rows  # the random checks: among the more confident half, where a threshold falls
    if len(open_rows) > 2 * n_audit:
        confident = open_rows[confidence[open_rows] >= np.quantile(confidence[open_rows], 1 - AUDIT_FROM)]
    audit = rng.choice(confident, size=n_audit, replace=False) if n_audit else np.zeros(0, dtype=np.int64)
    pool = np.setdiff1d(open_rows, audit)
    conf = confidence[pool]
    pool = pool[conf <= np.quantile(conf, UNCERTAIN_SHARE)] if len(pool) > 2 * n else pool
    k = min(n - n_audit, len(pool))
    chosen, why = [], []
    if k > 0:
        x = np.ascontiguousarray(vectors[pool], dtype=np.float32)
        if k < len(pool):  # k-means++ seeding: faiss's random seeding merged well-separated groups
            km = KMeans(k, init="k-means++", n_init=1, max_iter=20, random_state=seed).fit(x)
            assign, centres = km.labels_, km.cluster_centers_
        else:
            assign, centres = np.arange(len(pool)), x
        uncertainty = np.bincount(assign, weights=1.0 - confidence[pool], minlength=k)
        sizes = np.bincount(assign, minlength=k)
        for c in np.argsort(-uncertainty, kind="stable"):
            members = np.flatnonzero(assign == c)
            if not len(members):
                continue
            chosen.append(pool[members[np.argmax(x[members] @ centres[c])]])
            why.append(WHY_CLUSTER.format(n=int(sizes[c])))
    rows = np.asarray(chosen + list(audit), dtype=np.int64)
    return Questions(rows, why + [WHY_AUDIT] * len(audit),
                     np.r_[np.zeros(len(chosen), dtype=bool), np.ones(len(audit), dtype=bool)])
