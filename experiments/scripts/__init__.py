"""One-off scripts: benchmarks, converters of public data, studies; each runs as
`python experiments/scripts/NAME.py`."""
