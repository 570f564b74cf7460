"""Energy accounting (paper eq. 18, Appendix D.7; docs/DESIGN.md, "Energy").

The spiking wrappers emit op events (``events``) whose spike statistics are read off the frames
(``statistics``); the meter collects them; a cost model (``cost_model``) turns them into MACs, ACs and
joules when a report is read.
"""

from .cost_model import COST_MODELS, NONLINEAR_MACS, CostModel, OpCost, PaperCostModel, cost_model
from .events import (HadamardOp, LinearOp, NonlinearOp, OpEvent, ProductOp, ScoresOp, SiteFired, SoftmaxOp,
                     TokensSeen, ValuesOp)
from .meter import EnergyConstants, EnergyMeter, SiteStats
from .statistics import (intervals, linear_op, nnz, product_op, query_head_weights, scores_op, softmax_op,
                         value_columns, value_rows, values_from_columns, values_from_sums, values_op)

__all__ = ["COST_MODELS", "NONLINEAR_MACS", "CostModel", "EnergyConstants", "EnergyMeter", "HadamardOp", "LinearOp",
           "NonlinearOp", "OpCost", "OpEvent", "PaperCostModel", "ProductOp", "ScoresOp", "SiteFired", "SiteStats",
           "SoftmaxOp", "TokensSeen", "ValuesOp", "cost_model", "intervals", "linear_op", "nnz", "product_op",
           "query_head_weights", "scores_op", "softmax_op", "value_columns", "value_rows", "values_from_columns",
           "values_from_sums", "values_op"]
