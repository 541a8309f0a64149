"""Weight-penalty maths (L1, L2, ElasticNet) and the choice of which parameters they apply to."""

from reglab.regularization.penalties import ElasticNet, make_penalty
from reglab.regularization.selection import PenaltyGroup, select_parameters

__all__ = ["ElasticNet", "PenaltyGroup", "make_penalty", "select_parameters"]
