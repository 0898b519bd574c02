"""One test file per analyzer kind (test_<kind>.py), the registry, and shared recorded measurements."""
