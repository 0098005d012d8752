"""Benchmarks of jobwheel against baselines measured in the same run (`python -m bench`).

Not tests: nothing here asserts a time. Each scenario returns rows of figures and ratios.
"""
