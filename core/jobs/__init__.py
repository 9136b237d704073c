"""Jobs: the queue (rows in DuckDB), the supervisor that starts and settles them, and the worker
process that runs one. ``kinds`` names, for each job kind, its worker-side module (what runs in the
worker, under the GPU environment alone) and its app-side module (submit, ingest, queries).

This package's ``__init__`` imports nothing: the worker imports ``core.jobs.files`` and
``core.jobs.kinds`` without pulling in the app side."""
