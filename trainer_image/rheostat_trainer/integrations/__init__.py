"""Framework integrations: the SDK contract wired into the training loops people write.

* :mod:`rheostat_trainer.integrations.pytorch`: a plain PyTorch loop. ``Trial`` yields
  epochs, reports each one, stops when the tuner prunes the trial and calls
  ``finish``; it needs nothing beyond the SDK (torch only for the LR range test).
* :mod:`rheostat_trainer.integrations.lightning`: PyTorch Lightning. ``RheostatCallback``
  does the same from Lightning's hooks; ``lr_range_test`` runs the LR sweep on a
  ``LightningModule`` through its own ``training_step`` and ``configure_optimizers``.
  Needs the ``lightning`` extra (``pip install 'rheostat[lightning]'``).
* :mod:`rheostat_trainer.integrations.transformers`: Hugging Face ``Trainer``. A
  ``TrainerCallback`` and an ``lr_range_test`` through the Trainer's own optimizer and
  ``compute_loss``. Needs the ``transformers`` extra.

Each module is imported on its own, so using one never imports another framework.
All are thin: reporting, stopping and the LR sweep are the SDK's own
(:func:`rheostat_trainer.report`, :func:`~rheostat_trainer.should_stop`,
:func:`~rheostat_trainer.finish`, :func:`rheostat_trainer.lr_finder.lr_range_test`).
"""
