"""Tests of accel.profiling, mirroring the package."""
