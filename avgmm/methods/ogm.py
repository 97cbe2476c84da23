"""OGM as revised in Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal
Learning" (TPAMI 2024): OGM-GE's gradient modulation after a warm-up of unmodulated
epochs, with that paper's settings.

The authors' TPAMI code (GeWu-Lab/BML_TPAMI2024, code/main.py `train`) computes the same
coefficient as the CVPR code (`1 - tanh(alpha * relu(rho))` for the dominant modality, GE
noise on both encoders' 4-D gradients in `OGM_GE` mode) but never modulates in the first
six epochs (`warm_up = 1 if epoch <= 5`). See docs/methods.md.
"""

import ml_collections

from avgmm.methods import ogm_ge


class Ogm(ogm_ge.OgmGe):
    """OGM-GE with a warm-up: modulation in epochs `>= warmup_epochs` that also lie in
    `[modulation_starts, modulation_ends]`."""

    name = "ogm"
    label = "OGM (TPAMI 2024)"
    # Around the TPAMI scripts' 0.8.
    tuning = {"ogm.alpha": (0.4, 0.8, 1.2)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # code/scripts/train_ogm.sh: --alpha 0.8 --modulation_starts 0 --modulation_ends 60
        # (main.py's own defaults are alpha 1.0 and ends 80; the script is what was run).
        c.alpha = 0.8
        # code/config.py and main.py default --modulation OGM_GE; the script keeps it.
        c.mode = "OGM_GE"
        c.modulation_starts = 0
        c.modulation_ends = 60
        # main.py: `warm_up = 1 if epoch <= 5 else 0` (hard-coded): six epochs unmodulated.
        c.warmup_epochs = 6
        return c

    @classmethod
    def validate(cls, config, need):
        super().validate(config, need)
        need(config[cls.name].warmup_epochs >= 0, f"{cls.name}.warmup_epochs", "an integer >= 0")

    def modulates(self, epoch):
        return epoch >= self._settings().warmup_epochs and super().modulates(epoch)
