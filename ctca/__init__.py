"""ctca: continuous sign language recognition (CTCA, VAC, SMKD and a baseline) as a DVC + MLflow pipeline."""
