"""Hyperparameter search on Optuna: `fmnist tune SPACE_FILE`.

    from fmnist.tuning import read_search_space, tune

    result = tune(read_search_space("fast-space.yaml"), "runs/tune-fast", trials=10, trial_seconds=30)
    result.best.params, result.best.value     # validation accuracy; the test split is never read
    result.best_config                        # runs/tune-fast/best.yaml, for fmnist train --config

Needs the tune extra (optuna); PostgreSQL storage also needs tune-postgres (psycopg2).
"""

from fmnist.tuning.best_config import format_table, write_best_config
from fmnist.tuning.space import Parameter, SearchSpace, read_search_space
from fmnist.tuning.study import PRUNERS, TrialRow, TuneResult, trial_rows, tune

__all__ = [
    "PRUNERS",
    "Parameter",
    "SearchSpace",
    "TrialRow",
    "TuneResult",
    "format_table",
    "read_search_space",
    "trial_rows",
    "tune",
    "write_best_config",
]
