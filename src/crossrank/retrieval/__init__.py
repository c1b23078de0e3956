"""First-stage retrieval: BM25 (bm25s), dense (all-MiniLM-L6-v2), reciprocal-rank fusion,
and the LanceDB store behind ``crossrank index`` / ``crossrank search``."""
