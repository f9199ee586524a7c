"""Baseline defenses, reimplemented from their published descriptions (no code copied).

* ``finetune``  — plain fine-tuning on the defender's clean data.
* ``fineprune`` — prune the heads least active on clean data, then fine-tune (Liu et al. 2018, head version).
* ``pure``      — PURE (Zhao et al., ICML 2024): head pruning by [CLS]-attention variance + attention
  normalisation during fine-tuning.
* ``strip``     — STRIP for text (input-level detector): perturbed copies of a triggered input keep a
  confident prediction.
* ``rap``       — RAP (Yang et al. 2021, input-level detector): a trained perturbation word barely moves a
  triggered input's prediction.
* ``bki``       — BKI (Chen & Dai 2021): the word whose removal moves the [CLS] state most, often, across the
  analysed inputs is the suspected trigger; inputs holding it are flagged.

ONION is not included. It scores each word by the change in GPT-2 perplexity when it is removed; it needs a
pretrained causal language model, and none is available offline here: no package in our dependency set ships LM
weights (the only packaged model is the all-MiniLM-L6-v2 sentence encoder, which is not a language model), and
the hub cannot be reached.

All fine-tuning goes through ``training.train`` (one loop for the whole project).
"""
