"""The training child process: request/result types, the Keras trainer, model, regularizers and data.

Only :mod:`workers.child.request` is imported by the parent (it is Keras-free); ``train``, ``model``,
``regularizers`` and ``penalties`` import Keras and run in the spawned child only. Nothing is imported
here, so importing ``workers.child.request`` does not pull in Keras.
"""
