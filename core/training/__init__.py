"""Training: the config and presets, the GPU memory estimate, the trainer (worker side) and runs
(app side: submit, resume, metrics)."""
