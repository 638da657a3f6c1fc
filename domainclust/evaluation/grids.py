"""The L2 penalties and sweep length every linear classifier of the evaluation is tuned over,
and the neighbour counts of the low-shot k-NN.

Two regimes, two grids: a probe trained on a whole labelled split (`linear`, `heldout`) needs
less regularisation than a classifier fit on a few shots per class (`frozen`), where the
penalty is chosen by cross-validation on the shots alone.
"""

PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)  # a whole labelled training split
LOW_SHOT_WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)  # a few shots per class
LOW_SHOT_DEFAULT_WEIGHT_DECAY = 1e-2  # one shot per class: nothing to validate on
SWEEP_ITER = 40  # L-BFGS iterations of each candidate scored during selection
LOW_SHOT_KS = (1, 3, 5, 10, 20)  # neighbours tried by leave-one-out on the shots
LOW_SHOT_DEFAULT_K = 1  # one shot per class: nothing to leave out; the nearest shot decides
