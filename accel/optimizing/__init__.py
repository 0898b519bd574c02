"""`accel optimize`: the recipe engine, the fidelity guard, the optimizers and the lock that
re-applies what was kept.
"""
