"""`mmssl finetune`: how many labels a pretrained encoder saves — few-label fine-tuning, semi-supervised, transfer.

    mmssl finetune RUN_DIR|CHECKPOINT [overrides…]     e.g. labels=0.05 mode=partial unfreeze_last=2

The run's saved config supplies encoder and data; ``configs/finetune.yaml`` supplies the fine-tuning keys
(stored under ``finetune.``; ``config.make_config``). Steps (``trainer.prepare``, ``trainer.FinetuneTrainer``):
build the data (``data=<name>`` swaps in another dataset of the same modality, adapted to the encoder's
input shape) → class-balanced labelled subset fixed by seed, with a validation split carved from it →
encoder (pretrained weights, or random with ``from_scratch=true``) and a classifier head → freeze per
``mode`` → AdamW with optional layer-wise LR decay → labelled cross-entropy (+ FixMatch pseudo-labels and
the self-supervised objective on unlabelled data when ``semi=true``), stepped by the pretraining trainer's
loop (schedule, AMP, DDP, atomic checkpoints; ``resume=true`` continues bit-exactly on CPU) → early stopping
on validation accuracy (not with ≤ ``few_labels`` labels per class: a fixed budget then) → test accuracy;
``mode=frozen`` with a linear head instead fits the head with the linear probe's own solver
(``solver=probe``), so it scores what the probe scores on the same features. Written to
``RUN_DIR/finetune/<name>/`` (config.yaml, metrics.jsonl, checkpoints/, summary.json, classifier.pt with keys
``encoders.<modality>.*`` and ``head.*``) and printed (``runner``). The building blocks are in ``parts``.
"""

from mmssl.finetune.config import MODES, make_config
from mmssl.finetune.runner import finetune, main, run

__all__ = ["MODES", "finetune", "main", "make_config", "run"]
