"""Weight-penalty maths (the Penalty protocol, its kinds) and the choice of parameters they apply to."""

from reglab.regularization.penalties import (
    L1,
    L2,
    PENALTIES,
    ElasticNet,
    Penalty,
    Threshold,
    make_penalty,
)
from reglab.regularization.selection import PenaltyGroup, select_parameters

__all__ = [
    "L1",
    "L2",
    "PENALTIES",
    "ElasticNet",
    "Penalty",
    "PenaltyGroup",
    "Threshold",
    "make_penalty",
    "select_parameters",
]
