"""The rtecs pygame demo: a small shared world showing every idea of the Datastore seed.

Run ``python -m examples.pygame_demo --help``.
"""
