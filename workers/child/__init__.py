"""The training child process: its main loop, request/result types, the Keras trainer, model, regularizers, data.

The parent imports only :mod:`workers.child.request`, Keras-free; :mod:`workers.child.process` is
the child's entry point, run in a fresh interpreter by :mod:`workers.parent.child`. ``train``,
``model``, ``regularizers`` and ``penalties`` import Keras and are loaded in the child only.
Nothing is imported here, so importing ``request`` does not pull in Keras.
"""
