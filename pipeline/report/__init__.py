"""The ablation study's report: the training runs of a study (``runs``), the table beside the paper's numbers
(``table``, ``paper``), its formats (``formats``) and figures (``figures``). Reads MLflow; imports nothing of
training but ``pipeline.tracking.keys``."""
