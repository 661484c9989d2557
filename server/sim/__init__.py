"""The simulated TMS cluster (`cluster`): the upstream API served from memory, with knobs for
latency, failures, timeouts and malformed answers. Embedded as cluster `sim` at `/sim`, or run
alone with `python -m server simulator`."""
