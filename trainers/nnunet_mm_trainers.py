"""Every nnunet_mm trainer, by the name users pass to ``nnUNetv2_train -tr`` / ``nnUNetv2_predict -tr``."""
from nnunet_mm.atlas.trainer import MASPriorTrainer, MASPriorTrainer_debug  # noqa: F401
from nnunet_mm.cmc.mean_teacher import CMCMeanTeacherTrainer, CMCMeanTeacherTrainer_debug  # noqa: F401
from nnunet_mm.cmc.trainer import CMCTrainer, CMCTrainer_debug  # noqa: F401
from nnunet_mm.cmg.trainer import CMGTrainer, CMGTrainer_debug  # noqa: F401
from nnunet_mm.synthesis.trainer import SynthTumorTrainer, SynthTumorTrainer_debug  # noqa: F401
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer, MultiModalTrainer_debug  # noqa: F401
from nnunet_mm.weak.trainer import WeakLabelTrainer, WeakLabelTrainer_debug  # noqa: F401
from nnunet_mm.training.demo_trainers import (MultiModalTrainer_demo, nnUNetTrainer_debug,  # noqa: F401
                                               nnUNetTrainer_demo)
