"""Weight-penalty maths (the Penalty protocol, its kinds), weight constraints (the Constraint
protocol, max-norm) and the choice of parameters they apply to."""

from reglab.regularization.constraints import (
    CONSTRAINTS,
    Constraint,
    MaxNorm,
    make_constraint,
)
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
    "CONSTRAINTS",
    "L1",
    "L2",
    "PENALTIES",
    "Constraint",
    "ElasticNet",
    "MaxNorm",
    "Penalty",
    "PenaltyGroup",
    "Threshold",
    "make_constraint",
    "make_penalty",
    "select_parameters",
]
