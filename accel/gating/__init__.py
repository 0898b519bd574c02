"""`accel bench` and `accel gate`: fresh-process measurements, baselines, verdicts and CI reports."""
