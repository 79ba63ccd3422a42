"""Fine-tuning of the retail encoder (``taxmig train`` / ``taxmig evaluate``).

Pairs from a labelled catalog, sentence-transformers' trainer and losses, and the evaluation
report land here (issue 3). The migrate path already accepts any encoder folder via ``--model``.
"""
