"""What counts as a near-zero weight: |w| below NEAR_ZERO.

The weight-penalty callback logs the fraction of such weights (`reg/near_zero_fraction`) and the
report's sparsity table names the threshold; here, so that the report reads it without torch.
"""

NEAR_ZERO = 1e-3
