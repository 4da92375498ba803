"""The fold decides the same in every process: two interpreters with different hash seeds fold
one history into the same bytes, every message and every state.

Why in separate processes: iterating a set or a dict built from one follows the string hash,
which Python seeds per process (``PYTHONHASHSEED``). A fold that let that order into an output
(the order of tombstones, of destroyed keys, of a state's entries) passes any test run in one
process, yet the worker and the auditor's replay, two processes, would write and expect
different bytes, and the hash chain over the log's bytes would break.
"""

from __future__ import annotations

import os
import subprocess
import sys

import processors

FOLD_AND_DIGEST = r"""
import hashlib, sys
import orjson
from processors import fold
from processors.messages import to_messages
from streams.bench.history import build_history
from streams.settings import load_policy

from processors import envelope

policy = load_policy()
digest, states, head = hashlib.sha256(), {}, b""
for event in build_history(6000, 300, seed=int(sys.argv[1])):
    if event.get("fields"):  # sealed as the guard seals them, minus the random nonces
        key_id = f"{event['subject_id']}/{event['event_id']}"
        event["fields"] = {k: envelope.build(key_id, hashlib.sha256(v.encode()).digest()) for k, v in event["fields"].items()}
    state = states.setdefault(event["subject_id"], fold.new_state(event["subject_id"]))
    _, outputs = fold.apply(state, event, event["occurred_at"], policy)
    messages, head = to_messages(outputs, head, policy)
    for m in messages:
        digest.update(m.topic.encode() + b"\0" + m.key + b"\0" + (m.value or b"-") + repr(m.headers).encode())
for sid in sorted(states):
    digest.update(orjson.dumps(states[sid]))  # the state as the worker stores it: key order included
print(digest.hexdigest())
"""


def fold_in_a_process(hash_seed: str, history_seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    root = os.path.dirname(os.path.dirname(processors.__file__))
    done = subprocess.run(
        [sys.executable, "-c", FOLD_AND_DIGEST, str(history_seed)], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_two_processes_with_other_hash_seeds_fold_a_history_into_the_same_bytes() -> None:
    for history_seed in (3, 11):
        digests = {fold_in_a_process(seed, history_seed) for seed in ("0", "1", "4242")}
        assert len(digests) == 1, f"the fold's bytes depend on the process's hash seed (history {history_seed})"
