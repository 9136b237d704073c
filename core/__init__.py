"""ViTune Studio's engine: everything the pages do, usable headless through ``python -m core``."""
