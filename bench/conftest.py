"""pytest-benchmark suites: run with
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench --benchmark-group-by=param:shape``.
Speed is compared here, never asserted."""
