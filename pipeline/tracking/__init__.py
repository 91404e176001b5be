"""MLflow for training jobs: the names every part shares (``keys``), the store (``store``), which run a job
writes to and which checkpoint it resumes (``identity``), and the sweep callback that prepares the store
(``sweep``). Nothing is imported here: ``pipeline.tracking.keys`` must load without MLflow or torch."""
