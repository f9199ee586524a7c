"""Token saliency with Captum: which tokens push the model toward a class, on the clean and the triggered text.

Two attributions of the class logit to the input tokens, both taken at the word-embedding layer
(``model.get_input_embeddings()``, so any architecture with an embedding table works):

* ``"ig"``: integrated gradients (``captum.attr.LayerIntegratedGradients``), from a baseline where every
  non-special token is ``[PAD]`` (``[CLS]``/``[SEP]`` kept) to the input, ``n_steps`` Riemann steps;
* ``"gxi"``: gradient x input (``captum.attr.LayerGradientXActivation`` on the embeddings).

Each token's score is the attribution summed over the hidden dimension ``(T, hidden) -> (T,)``; signed (positive
= toward the class). ``compare_saliency`` explains the clean and the triggered text toward the SAME class, the
one predicted on the triggered text (for a working backdoor, the target), so the two strips are comparable: on a
triggered text the trigger's tokens carry most of the push. Our design; the papers we follow are silent on
attribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .architecture import classifier_positions, is_causal
from .attention import DEFAULT_MAX_LENGTH

METHODS = {"ig": "integrated gradients", "gxi": "gradient × input"}
DEFAULT_STEPS = 32


@dataclass
class TokenSaliency:
    """One text's attribution: ``tokens`` (with specials), ``scores`` ``(T,)``, toward class ``target``."""

    text: str
    tokens: list[str]
    offsets: np.ndarray  # (T, 2)
    scores: np.ndarray  # (T,)
    target: int
    method: str
    convergence_delta: float | None = None  # IG only: completeness error
    logit: float | None = None  # IG only: the target class's logit on the text
    baseline_logit: float | None = None  # IG only: ... on the baseline (every non-special token [PAD])

    def normalised(self) -> np.ndarray:
        """``scores`` divided by the largest absolute score (in [-1, 1])."""
        m = float(np.abs(self.scores).max()) if self.scores.size else 0.0
        return self.scores / m if m > 0 else self.scores

    def top(self, k: int = 5) -> list[dict]:
        order = np.argsort(-self.scores)[:k]
        return [{"token": self.tokens[i], "index": int(i), "score": float(self.scores[i])} for i in order]

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": list(self.tokens), "scores": [float(x) for x in self.scores],
                "target": int(self.target), "method": self.method,
                "convergence_delta": self.convergence_delta, "logit": self.logit,
                "baseline_logit": self.baseline_logit}

    def reference_note(self, target_name: str) -> str | None:
        """What integrated gradients' scores are measured from (None for other methods): they add up to the
        target logit's change from the all-[PAD] baseline to the text, so where the baseline already leans to the
        class more than the text, even the trigger can score below zero (seen on the zoo's BadNets + TAL model,
        whose all-[PAD] text reads 'sports' at a logit of +4.25 against the triggered text's +2.68)."""
        if self.logit is None or self.baseline_logit is None:
            return None
        note = (f"Integrated gradients split the change of the '{target_name}' logit from an all-[PAD] text "
                f"({self.baseline_logit:+.2f}) to this one ({self.logit:+.2f}): the scores add up to "
                f"{self.logit - self.baseline_logit:+.2f}.")
        if self.baseline_logit > self.logit:
            note += (" The [PAD] text leans to it more than this text does, so every token can score below zero, the "
                     "trigger too: the scores then say what moves this text from the [PAD] text, not what makes it "
                     f"'{target_name}'. Gradient × input reads each token at the text itself.")
        return note


def token_saliency(model, tokenizer, text: str, target: int | None = None, method: str = "ig",
                   n_steps: int = DEFAULT_STEPS, max_length: int = DEFAULT_MAX_LENGTH) -> TokenSaliency:
    """Attribution of class ``target`` (default: the model's prediction) to each token of ``text``."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got '{method}'.")
    device = next(model.parameters()).device
    enc = tokenizer(str(text), truncation=True, max_length=max_length, return_tensors="pt",
                    return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets = enc.pop("offset_mapping")[0].numpy().astype(np.int64)
    special = enc.pop("special_tokens_mask").bool()
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    extra = {k: v.to(device) for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    T = ids.shape[-1]
    layer = model.get_input_embeddings()
    causal = is_causal(model)
    if causal:  # keep the tokens up to the one the classifier reads (later ones cannot change it, causal)
        keep = int(classifier_positions(model, mask, ids)[0]) + 1
        ids, mask, special = ids[:, :keep], mask[:, :keep], special[:, :keep]
        extra = {k: v[:, :keep] for k, v in extra.items()}

    def forward(input_ids, attention_mask):
        """``(B, T)`` ids -> ``(B, C)`` logits. A decoder is given embeddings, so its classifier reads the last
        position for the text and the all-[PAD] baseline alike (given ids it reads the rightmost non-pad token:
        position 0 of the baseline)."""
        if causal:
            return model(inputs_embeds=layer(input_ids), attention_mask=attention_mask, **extra).logits
        return model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = forward(ids, mask)[0]  # (C,)
        if target is None:
            target = int(logits.argmax(-1))
        delta = logit = base_logit = None
        if method == "ig":
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            base = torch.where(special.to(device), ids, torch.full_like(ids, pad))
            with torch.no_grad():
                logit, base_logit = float(logits[int(target)]), float(forward(base, mask)[0, int(target)])
            lig = LayerIntegratedGradients(forward, layer)
            attr, d = lig.attribute(ids, baselines=base, additional_forward_args=(mask,), target=int(target),
                                    n_steps=n_steps, return_convergence_delta=True)
            delta = float(d.abs().max())
        else:
            attr = LayerGradientXActivation(forward, layer).attribute(ids, additional_forward_args=(mask,),
                                                                      target=int(target))
        scores = np.zeros(T, dtype=np.float32)  # (T,); a decoder's tokens after the classifier's stay 0
        scores[:ids.shape[-1]] = attr.sum(-1)[0].detach().float().cpu().numpy()
    finally:
        model.train(was)
    ids = enc["input_ids"]
    return TokenSaliency(str(text), tokenizer.convert_ids_to_tokens(ids[0].tolist()), offsets, scores, int(target),
                         method, delta, logit, base_logit)


@dataclass
class SaliencyPair:
    clean: TokenSaliency
    triggered: TokenSaliency
    target_name: str

    def to_dict(self) -> dict:
        return {"target_name": self.target_name, "clean": self.clean.to_dict(), "triggered": self.triggered.to_dict()}


def compare_saliency(model, tokenizer, clean_text: str, triggered_text: str, method: str = "ig",
                     label_names: list[str] | None = None, n_steps: int = DEFAULT_STEPS,
                     max_length: int = DEFAULT_MAX_LENGTH) -> SaliencyPair:
    """Saliency of the clean and the triggered text toward the class predicted on the triggered text."""
    trig = token_saliency(model, tokenizer, triggered_text, None, method, n_steps, max_length)
    clean = token_saliency(model, tokenizer, clean_text, trig.target, method, n_steps, max_length)
    name = label_names[trig.target] if label_names is not None and trig.target < len(label_names) else str(trig.target)
    return SaliencyPair(clean, trig, str(name))
