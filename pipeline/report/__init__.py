"""The ablation study's report: the training runs of a study (``runs``), the table beside the paper's numbers
(``table``, ``paper``) with its uncertainty (``stats``: mean ± std, Welch's 95% interval), its formats for
people (``formats``) and scripts (``records``: JSON, CSV), figures (``figures``) and the link that opens the
study in the MLflow UI (``ui_link``). Reads MLflow; imports nothing of training but
``pipeline.tracking.keys``."""
