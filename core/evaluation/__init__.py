"""Evaluation: inference and scoring (shared by the worker and the app), the evaluation job
(``evaluator``, worker side), stored evaluations and the gate (app side), the client report, and the
blind preference votes (``votes``) that the playground (``core.playground``) collects."""
