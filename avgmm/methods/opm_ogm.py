"""OPM & OGM: On-the-fly Prediction Modulation and On-the-fly Gradient Modulation
together (Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal Learning",
TPAMI 2024, the "OPM&OGM" row).

The authors' TPAMI code runs both when given `--use_adam_drop` and `--use_modulation`
(GeWu-Lab/BML_TPAMI2024, code/main.py `train`, code/models/Classifier.py `forward`): one
forward pass measures the modalities' batch confidences `s_a`, `s_v` from the un-dropped
features (the fusion layer's halves, detached), drops the dominant modality's features
with OPM's probability, back-propagates the fused cross entropy of the dropped features,
then scales (and, in `OGM_GE` mode, noises) the encoders' convolution gradients by OGM's
coefficient computed from the same `s_a`, `s_v`. Both stay off in the first six epochs of
100 (one `warm_up` flag; here `warmup_fraction` of the budget); OGM acts only inside its
modulation window (`modulation_start_fraction` to `modulation_end_fraction`).

Built from `opm.Opm` (the dropping step, which hands its gradients to
`transform_grads`) and `ogm.Ogm` (whose `transform_grads` is OGM-GE's modulation). The
scripts run each alone (code/scripts/train_opm.sh, train_ogm.sh); the defaults are
theirs. See docs/methods.md.
"""

import math

import numpy as np

from avgmm.methods import ogm, opm


class OpmOgm(opm.Opm, ogm.Ogm):
    """OPM's feature dropping in the forward pass and OGM's gradient modulation of the
    encoders, from the same un-dropped confidences, after a shared warm-up."""

    name = "opm_ogm"
    label = "OPM&OGM"
    # OGM's strength on top of the dropping: train_ogm.sh's 0.8, then the CVPR README's
    # 0.1, since the dominant modality is already slowed by the dropping and a short run
    # has few epochs to make up for slowing it twice.
    tuning = {"opm_ogm.alpha": (0.8, 0.1)}

    @classmethod
    def defaults(cls):
        # OGM's settings (train_ogm.sh: alpha 0.8, window 0..60 of 100; OGM_GE; six
        # warm-up epochs of 100) and OPM's (train_opm.sh: q_base 0.5, lam 0.5, p_exe 0.7;
        # the same warm-up, one `warm_up` flag in main.py), each from its own script; the
        # epochs as shares of the budget.
        c = ogm.Ogm.defaults()
        c.update(opm.Opm.defaults())
        return c

    @classmethod
    def validate(cls, config, need):
        for parent in (opm.Opm, ogm.Ogm):
            parent.validate.__func__(cls, config, need)
        need(math.isfinite(config[cls.name].alpha), f"{cls.name}.alpha", "a finite number")

    def describe(self, epoch):
        return {"dropping": self.dropping(epoch), "modulated": self.modulates(epoch)}

    def step_scalars(self, epoch):
        return {"drop": np.float32(self.dropping(epoch)),
                "modulate": np.float32(self.modulates(epoch))}

