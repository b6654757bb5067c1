"""Tools for the tests, the benchmarks and CI; not part of the installed distribution."""
