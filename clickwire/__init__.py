"""clickwire: real-time link-click events."""

from clickwire.native import check as _check_native

_check_native()  # compiled modules must match their sources (tools/build_native.py)
