"""The training child process: its main loop, request/result types, the Keras trainer, model, regularizers, data.

The parent imports only :mod:`workers.child.process` (the child's entry point, started by spawn)
and :mod:`workers.child.request`; both are Keras-free. ``train``, ``model``, ``regularizers``
and ``penalties`` import Keras and are loaded in the spawned child only. Nothing is imported here,
so importing those two does not pull in Keras.
"""
