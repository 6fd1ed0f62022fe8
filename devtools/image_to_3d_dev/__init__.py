"""Test doubles and measuring helpers shared by the tests and the benchmarks (dev only).

Installed by `uv sync` (the dev group, as a workspace member: devtools/); never shipped: not in the
wheel, the Modal image or the add-on zip. Tests and benchmarks import these from here, never from
each other.
"""
