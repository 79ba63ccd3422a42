"""Model folders made from data: fine-tuning (``taxmig train``, ``train-match``, ``evaluate``) and
the derived tiers (``taxmig distill``, ``taxmig quantize``).

Pairs from a labelled catalog, sentence-transformers' trainer and losses, the evaluation report,
and the static and int8 models built from the user's files land here. The layer above migrate's
(it reads catalogs, maps and matches as the commands do) and below the CLI; the migrate path
accepts any encoder folder via ``--model``.
"""
