"""Benchmark suites: suite name -> module exposing ``cases(quick: bool) -> list[Case]``
(and optionally ``plot(results, path)``, and ``table(results) -> str``: its own summary
printed after the results table). Imported only when run."""

SUITES = {
    "csr": "pyinfer.bench.suites.csr",
    "quant": "pyinfer.bench.suites.quant",
    "bitwise": "pyinfer.bench.suites.bitwise",
    "conv": "pyinfer.bench.suites.conv",
    "dense": "pyinfer.bench.suites.dense",
    "mixed": "pyinfer.bench.suites.mixed",
    "converted": "pyinfer.bench.suites.converted",
}
