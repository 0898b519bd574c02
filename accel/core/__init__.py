"""The foundation every command stands on: the pipeline contract and loading it, the machine and
its calibration, measurement and statistics, counts, hashing, files and errors. Imports only core.
"""
