"""Runnable example trainers: ``digits`` (a real PyTorch CNN) and ``synthetic``
(an analytic objective with a known optimum, for fast tests of the tuner)."""
