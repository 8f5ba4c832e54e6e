"""Side-by-side measurements; figures, commands and machines are in ``benchmarks/RESULTS.md``.

- ``python -m benchmarks.train_throughput``: training speed of the project's fused epoch
  against a per-step Python loop and scikit-learn, a scaling table, and the end-to-end
  wall time of ``python -m experiments.baseline`` (cold vs warm compilation cache).
- ``bash benchmarks/gpu_check.sh``: the same on an accelerator machine, in one bounded script.
"""
