"""The worker process: it pulls trials, runs each in a training child, and writes back (never imports Keras).

* :mod:`workers.parent.loop`: ``WorkerLoop``, the short skeleton (ask, run, settle);
* :mod:`workers.parent.runner`: ``TrainerProcess``, the training child and its pipe (started by
  :mod:`workers.parent.child` in a fresh interpreter, with a spare before each recycle);
* :mod:`workers.parent.heartbeat`, :mod:`workers.parent.checkpoints`, :mod:`workers.parent.artifacts`;
* :mod:`workers.parent.dedup` (reuse an equal config's result), :mod:`workers.parent.prediction`
  (duration prediction against the deadline), :mod:`workers.parent.environment` (GPU and versions),
  :mod:`workers.parent.follow` (``--follow`` picks the next open study).

``tests/test_no_keras_in_parent.py`` imports every module here and checks that neither Keras nor
TensorFlow was imported.
"""
