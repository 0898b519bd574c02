"""The search `accel optimize` runs over a recipe's candidates: the engine (a `Search`: plan, try each
candidate, finish), which candidates a recipe's rules admit (planning) and in what order under the
budget (budgeting), how accepted choices compose (composer), how pipelines are timed (measuring,
memory), the guard (validation, fidelity), the final re-measure (final), the result (outcome), and
`accel verify` (verify), which re-times a lock with the same keep test."""
