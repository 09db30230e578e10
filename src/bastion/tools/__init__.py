"""Shipped tools any app can use: ``run_python`` on the ``os`` tier, as a tool or a runner."""

from bastion.tools.python import PythonRunFailed, PythonRunner, make_run_python

__all__ = ["PythonRunFailed", "PythonRunner", "make_run_python"]
