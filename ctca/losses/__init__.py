"""Loss terms: CTC, VAC/SMKD distillation and segmentation losses, CTCA's cross-context (CCKD) losses."""
