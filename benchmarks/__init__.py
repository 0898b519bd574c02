"""accel's benchmarks: each module has a main() that measures side by side and prints a table."""
