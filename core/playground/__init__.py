"""The playground: a person asks models questions, one at a time, side by side or blind. ``server`` is
the inference worker (worker side: one model served on loopback), ``playground`` its app side (starts
the workers through the job queue, asks them, streams their answers), ``conversations`` the saved demo
scripts. Blind preference votes are an evaluation signal, kept in ``core.evaluation.votes``.

Imports nothing, so that the inference worker stays app-free."""
