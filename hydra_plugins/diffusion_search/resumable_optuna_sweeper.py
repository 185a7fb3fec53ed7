"""Hyper-parameter search that survives interruption: Hydra's Optuna sweeper, counting the trials already in the
study's file-backed storage (conf/hparams_search).

Hydra's sweeper loads an existing study (`load_if_exists`) but runs `n_trials` more and numbers them from 0 again,
which mixes new trials' numbers with the old trials' directories; this subclass runs only the missing trials,
numbered after the earlier ones. Everything else is the plugin's own. Without the `sweep` extra it defines nothing,
and `hparams_search=…` gets Hydra's own one line about the missing `hydra/sweeper` option.
"""

from __future__ import annotations

from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the `sweep` extra is not installed
    OptunaSweeper = None


def finished_trials(study_name: str | None, storage: Any) -> tuple[int, int]:
    """(finished, all) trials of a stored study; (0, 0) when there is no storage or no such study yet."""
    import optuna

    if not storage or not study_name:
        return 0, 0
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # optuna: no study of that name in the storage
        return 0, 0
    return sum(t.state.is_finished() for t in trials), len(trials)


if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """OptunaSweeper that carries on a stored study: re-running the command runs the trials still missing."""

        def sweep(self, arguments: list[str]) -> None:
            impl = self.sweeper
            done, total = finished_trials(impl.study_name, impl.storage)
            if total:
                print(f"search: study {impl.study_name!r} has {done} finished trial(s) of {impl.n_trials}; "
                      f"running {max(0, impl.n_trials - done)} more")
            impl.n_trials, impl.job_idx = max(0, impl.n_trials - done), total
            return super().sweep(arguments)
