"""Deploy: export to GGUF (``exporter``, worker side; ``exports``, app side), the preflight
(``preflight``, worker side; ``preflights``, app side), the Modelfile, Ollama, and releases."""
