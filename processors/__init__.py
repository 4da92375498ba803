"""The lifecycle logic: pure rules (policy, guard, fold) and the worker loop that runs them."""
