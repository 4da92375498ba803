"""The lifecycle logic: pure rules (policy, guard, fold) and the thin Faust agents that run them."""
