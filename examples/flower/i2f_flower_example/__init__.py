"""FedSGD on the built-in digits with i2f_fast's ReconstructionRiskMod on every client."""
