"""Duplicate clusters inside one catalog: the connected components of the match graph.

Every product gets a ``cluster_id`` (1, 2, ... in file order of each cluster's first product); a
product without a duplicate is a cluster of one. Connected components chain (A~B and B~C put A and
C together even when A and C do not match), so clusters above a size are flagged for review.

>>> ids, sizes = cluster_ids(5, np.array([0, 3]), np.array([1, 4]))
>>> ids.tolist(), sizes.tolist()
([1, 1, 2, 3, 3], [2, 2, 1, 2, 2])
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def cluster_ids(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per node, size of its cluster) for ``n`` nodes and the undirected edges a[k]-b[k]."""
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so ids follow the file order
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(1, len(order) + 1)
    ids = renumber[labels]
    sizes = np.bincount(ids)[ids]
    return ids.astype(np.int64), sizes.astype(np.int64)
