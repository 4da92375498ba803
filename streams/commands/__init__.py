"""The user commands behind ``lifecycle``: publish, consent and export, replay, keys rotate,
demo, and the downstream sink. Each stands on the plumbing and the worker runtime, never on
another command."""
