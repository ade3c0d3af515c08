"""Framework integrations: the SDK contract wired into the training loops people write.

* :mod:`rheostat_trainer.integrations.pytorch`: a plain PyTorch loop. ``Trial`` yields
  epochs, reports each one, stops when the tuner prunes the trial and calls
  ``finish``; it needs nothing beyond the SDK (torch only for the LR range test).
* :mod:`rheostat_trainer.integrations.lightning`: PyTorch Lightning. ``RheostatCallback``
  does the same from Lightning's hooks; ``lr_range_test`` runs the LR sweep on a
  ``LightningModule`` through its own ``training_step`` and ``configure_optimizers``.
  Needs the ``lightning`` extra (``pip install 'rheostat[lightning]'``).

Each module is imported on its own, so using one never imports another framework.
Both are thin: reporting, stopping and the LR sweep are the SDK's own
(:func:`rheostat_trainer.report`, :func:`~rheostat_trainer.should_stop`,
:func:`~rheostat_trainer.finish`, :func:`rheostat_trainer.lr_finder.lr_range_test`).
"""
