"""Every nnunet_mm trainer, by the name users pass to ``nnUNetv2_train -tr`` / ``nnUNetv2_predict -tr``."""
from nnunet_mm.training.cmc_trainer import CMCTrainer, CMCTrainer_debug  # noqa: F401
from nnunet_mm.training.cmg_trainer import CMGTrainer, CMGTrainer_debug  # noqa: F401
from nnunet_mm.training.mas_prior_trainer import MASPriorTrainer, MASPriorTrainer_debug  # noqa: F401
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer, MultiModalTrainer_debug  # noqa: F401
from nnunet_mm.training.synth_tumor_trainer import SynthTumorTrainer, SynthTumorTrainer_debug  # noqa: F401
from nnunet_mm.training.weak_label_trainer import WeakLabelTrainer, WeakLabelTrainer_debug  # noqa: F401
