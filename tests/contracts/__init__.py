"""Contract suites: one set of tests that every implementation of a Protocol passes."""
