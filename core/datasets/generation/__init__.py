"""Pair generation from raw documents (the guide's pipeline). Worker side: ``documents``,
``answers``, ``endpoint``, ``generator``; app side: ``generations``."""
