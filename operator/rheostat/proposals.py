"""Proposing parameters that this study has not tried yet.

Samplers repeat themselves: a GP's acquisition maximum on a discrete space, TPE
late in a small space, a grid sampler rebuilt after a restart that forgot what it
visited. Running a point twice wastes a training run, so every proposal is checked
against the trials so far. After a few repeats the sampler gets no more tries:
a discrete space (up to `MAX_ENUMERATED_POINTS`) is then listed and an untried point
drawn from it, so a budget as large as the space runs every point exactly once; a
continuous space falls back to plain random sampling. Only when neither finds
anything new is the space used up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from rheostat.ledger import ATTR_ATTEMPT, ATTR_KIND, ATTR_REQUEUED, outcome
from rheostat.space import MAX_ENUMERATED_POINTS, PointKey, SearchSpace
from rheostat.spec import Scalar

# Model-based asks are the expensive ones (a GP fit each): few re-asks, then the
# cheap fallback.
SAMPLER_RETRIES = 3
RANDOM_RETRIES = 30


@dataclass(frozen=True)
class Proposal:
    """A fresh trial and the attempt it is (a re-run of lost parameters is attempt 2+)."""

    trial: optuna.Trial
    attempt: int


class Proposer:
    """Asks a study for new parameters, skipping (and recording) repeats."""

    def __init__(self, study: optuna.Study, space: SearchSpace, seed: int | None) -> None:
        self.study = study
        self.space = space
        self.seed = seed

    def capacity(self) -> int | None:
        """How many distinct points the space holds (None: unbounded)."""
        size = self.space.size
        return size if size is not None and size <= MAX_ENUMERATED_POINTS else None

    def propose(self) -> Proposal | None:
        """A trial with untried parameters (now RUNNING in the study), or None if used up."""
        for _ in range(SAMPLER_RETRIES):
            proposal = self._take(self._ask())
            if proposal is not None:
                return proposal
        if self.capacity() is not None:
            point = self._untried_point()
            if point is None:
                return None
            self.study.enqueue_trial(point)
            return self._take(self._ask())
        fallback = optuna.samplers.RandomSampler(seed=self._seed())
        for _ in range(RANDOM_RETRIES):
            proposal = self._take(self._ask(fallback))
            if proposal is not None:
                return proposal
        return None

    def tried(self, exclude: int | None = None) -> set[PointKey]:
        """Points that ran, run or were seeded (failed ones may be proposed again)."""
        keys = set()
        for trial in self.study.get_trials(deepcopy=False):
            told = trial.user_attrs.get(ATTR_KIND) == "seeded"  # an earlier study's point
            if trial.number == exclude or (outcome(trial) in {None, "failed"} and not told):
                continue
            if set(self.space.distributions) <= set(trial.params):
                keys.add(self.space.key(trial.params))
        return keys

    def _take(self, trial: optuna.Trial) -> Proposal | None:
        """Keep a fresh trial, or close it as a duplicate."""
        attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 1))
        requeued = bool(trial.user_attrs.get(ATTR_REQUEUED))
        if requeued or self.space.key(trial.params) not in self.tried(exclude=trial.number):
            trial.set_user_attr(ATTR_ATTEMPT, attempt)
            return Proposal(trial, attempt)
        trial.set_user_attr(ATTR_KIND, "duplicate")
        self.study.tell(trial, state=TrialState.FAIL)
        return None

    def _ask(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Trial:
        if sampler is None:
            return self.study.ask(self.space.distributions)
        own = self.study.sampler
        self.study.sampler = sampler
        try:
            return self.study.ask(self.space.distributions)
        finally:
            self.study.sampler = own

    def _untried_point(self) -> dict[str, Scalar] | None:
        tried = self.tried()
        untried = [p for p in self.space.points() if self.space.key(p) not in tried]
        if not untried:
            return None
        return random.Random(self._seed()).choice(untried)

    def _seed(self) -> int | None:
        """Seeded studies stay reproducible; the offset keeps each draw different."""
        return None if self.seed is None else self.seed + len(self.study.get_trials(deepcopy=False))
